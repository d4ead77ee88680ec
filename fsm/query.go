package fsm

import (
	"cmp"
	"container/heap"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
)

// Query types. They are plain values: a caller may keep and modify them.

// Holder is one peer holding a file, as Lookup reports it.
type Holder struct {
	Peer PeerID
	Addr string // the holder's piece-server address from its latest JoinPeer
	Name string // what this holder calls the file
}

// FileInfo describes an indexed file. Its Name is the lexicographically
// smallest name among the file's holders, so every node reports the same one.
type FileInfo struct {
	FileMeta
	Holders int // number of peers holding the file, >= 1
}

// PeerInfo describes a joined peer.
type PeerInfo struct {
	ID       PeerID
	Addr     string
	JoinedAt int64 // Time of the peer's first JoinPeer, Unix nanoseconds
	LastJoin int64 // Time of its most recent JoinPeer, Unix nanoseconds
	Files    int   // number of files the peer holds
}

// Counts sizes the index.
type Counts struct {
	Peers    int // joined peers
	Files    int // distinct files
	Holdings int // (peer, file) pairs
}

// Search limits.
const (
	// DefaultSearchLimit is the number of results Search returns when
	// limit <= 0.
	DefaultSearchLimit = 100
	// MaxSearchLimit caps Search's limit.
	MaxSearchLimit = 10000
	// MaxQueryLen is the longest query Search evaluates, in bytes; a
	// longer one matches nothing. Callers should reject it up front.
	MaxQueryLen = 1024
)

func (fl *file) info() FileInfo { return fl.infoNamed(fl.minName()) }

func (fl *file) infoNamed(name string) FileInfo {
	return FileInfo{
		FileMeta: FileMeta{ID: fl.id, Name: name, Size: fl.size, PieceSize: fl.pieceSize},
		Holders:  fl.holders.len(),
	}
}

func (p *peer) info() PeerInfo {
	return PeerInfo{ID: p.id, Addr: p.addr, JoinedAt: p.joinedAt, LastJoin: p.lastJoin, Files: p.files.len()}
}

// Lookup returns a file's description and its holders sorted by PeerID. ok
// is false if the file is not indexed or id is malformed. The cost is linear
// in the number of holders; sorting happens after the read lock is released.
func (f *FSM) Lookup(id FileID) (info FileInfo, holders []Holder, ok bool) {
	if id.Validate() != nil {
		return FileInfo{}, nil, false
	}
	f.mu.RLock()
	fl := f.st.file(id)
	if fl == nil {
		f.mu.RUnlock()
		return FileInfo{}, nil, false
	}
	info = fl.info()
	holders = make([]Holder, 0, fl.holders.len())
	fl.holders.each(func(peer PeerID, hn holderName) bool {
		h := Holder{Peer: peer, Name: hn.name}
		if p := f.st.peer(peer); p != nil {
			h.Addr = p.addr
		}
		holders = append(holders, h)
		return true
	})
	f.mu.RUnlock()
	slices.SortFunc(holders, func(a, b Holder) int { return strings.Compare(string(a.Peer), string(b.Peer)) })
	return info, holders, true
}

// SearchCursor is a position in Search's order (Name, then ID): a page
// that starts after it holds only results that sort strictly after
// (Name, ID). The zero cursor is before every result. A caller pages by
// passing the Name and ID of the last result of the previous page.
type SearchCursor struct {
	Name string
	ID   FileID
}

// SearchPage is one page of Search results.
type SearchPage struct {
	// Files are the page's results, sorted by Name, then ID.
	Files []FileInfo
	// Total is the number of files that match the query in the whole
	// index, on every page.
	Total int
	// Skipped is the number of matches that sort at or before the
	// cursor, so Files are results Skipped+1 … Skipped+len(Files) of
	// Total (as of the scan).
	Skipped int
	// More reports that matches sort after the last of Files: pass
	// Next() as the cursor of the next page.
	More bool
}

// Next returns the cursor of the page after p: the position of its last
// result. It is the zero cursor if p has no results.
func (p SearchPage) Next() SearchCursor {
	if len(p.Files) == 0 {
		return SearchCursor{}
	}
	last := p.Files[len(p.Files)-1]
	return SearchCursor{Name: last.Name, ID: last.ID}
}

// Search returns the first page of SearchAfter with the zero cursor: files
// any of whose holder names contains every word of query, at most limit of
// them, sorted by Name, then ID.
func (f *FSM) Search(query string, limit int) []FileInfo {
	return f.SearchAfter(query, SearchCursor{}, limit).Files
}

// SearchAfter returns the files any of whose holder names contains every
// whitespace-separated word of query as a substring, compared after
// strings.ToLower, that sort after the cursor. An empty query matches every
// file. Results are sorted by Name, then ID; at most limit are returned
// (DefaultSearchLimit if limit <= 0, never more than MaxSearchLimit). The
// page also counts every match (Total) and those the cursor skips
// (Skipped). A query longer than MaxQueryLen matches nothing.
//
// The scan is linear in the number of holdings whatever the cursor, and
// allocates only for results. To keep a long scan from stalling Apply it
// holds the read lock for one shard (1/256 of the index) at a time, so the
// result is not one atomic view: each file is reported as of some moment
// between the call and the return, which is never older than the state
// when SearchAfter was called.
//
// Paging with cursors never reports a file twice while the index does not
// change between pages; a file added between pages shows up only if it
// sorts after the cursor. A file whose Name changes between pages (its
// holder with the smallest name leaves, or a new holder's name is smaller)
// moves in the order, so it may be missed, or, moving later, seen again:
// callers that follow every page should drop repeated IDs.
func (f *FSM) SearchAfter(query string, after SearchCursor, limit int) SearchPage {
	if limit <= 0 {
		limit = DefaultSearchLimit
	}
	limit = min(limit, MaxSearchLimit)
	if len(query) > MaxQueryLen {
		return SearchPage{}
	}
	words := strings.Fields(strings.ToLower(query))
	var grams uint64
	for _, w := range words {
		grams |= gramsOf(w)
	}
	cursor := FileInfo{FileMeta: FileMeta{Name: after.Name, ID: after.ID}}
	var page SearchPage
	later := 0 // matches after the cursor
	top := &topK{limit: limit}
	for i := range nShards {
		f.mu.RLock()
		for _, slot := range f.st.files[i].m {
			if slot.grams&grams != grams {
				continue // some bigram of the query is in no name
			}
			fl := slot.f
			if !fl.matches(words) {
				continue
			}
			page.Total++
			name := fl.minName()
			if compareResult(name, fl.id, cursor) <= 0 {
				page.Skipped++
				continue
			}
			later++
			if len(top.items) == limit && compareResult(name, fl.id, top.items[0]) >= 0 {
				continue
			}
			top.offer(fl.infoNamed(name))
		}
		f.mu.RUnlock()
	}
	page.Files = top.items
	slices.SortFunc(page.Files, func(a, b FileInfo) int { return compareResult(a.Name, a.ID, b) })
	page.More = later > len(page.Files)
	return page
}

// MinIDPrefixLen is the shortest file-ID prefix FilesWithPrefix accepts, in
// hex digits: 32 bits, so that a prefix a user copies from a listing is
// very unlikely to match a second file by chance.
const MinIDPrefixLen = 8

// ValidateIDPrefix returns nil if p is MinIDPrefixLen to FileIDLen
// lowercase hex digits, or an error wrapping ErrInvalid that says what is
// wrong.
func ValidateIDPrefix(p string) error {
	if len(p) < MinIDPrefixLen || len(p) > FileIDLen {
		return fmt.Errorf("%w: a file id prefix must be %d to %d hex digits, got %d bytes", ErrInvalid, MinIDPrefixLen, FileIDLen, len(p))
	}
	for i := 0; i < len(p); i++ {
		if unhex(p[i]) < 0 {
			return fmt.Errorf("%w: file id prefix %q: byte %d is not a lowercase hex digit", ErrInvalid, p, i)
		}
	}
	return nil
}

// FilesWithPrefix returns the files whose ID starts with prefix, sorted by
// ID, at most limit of them (DefaultSearchLimit if limit <= 0, never more
// than MaxSearchLimit), and the number of files that match in all. A
// prefix that ValidateIDPrefix rejects matches nothing.
//
// Files are sharded by the first byte of their ID, so the scan reads one
// shard (1/256 of the index) under one read lock: the answer is one atomic
// view, at a cost linear in that shard.
func (f *FSM) FilesWithPrefix(prefix string, limit int) (files []FileInfo, total int) {
	if ValidateIDPrefix(prefix) != nil {
		return nil, 0
	}
	if limit <= 0 {
		limit = DefaultSearchLimit
	}
	limit = min(limit, MaxSearchLimit)
	var ids []FileID
	f.mu.RLock()
	for id := range f.st.files[fileShardOf(FileID(prefix))].m {
		if strings.HasPrefix(string(id), prefix) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	total = len(ids)
	ids = ids[:min(len(ids), limit)]
	files = make([]FileInfo, len(ids))
	for i, id := range ids {
		files[i] = f.st.file(id).info()
	}
	f.mu.RUnlock()
	return files, total
}

func (fl *file) matches(words []string) bool {
	if len(words) == 0 {
		return true
	}
	found := false
	fl.holders.each(func(_ PeerID, h holderName) bool {
		for _, w := range words {
			if !strings.Contains(h.lower, w) {
				return true
			}
		}
		found = true
		return false
	})
	return found
}

func compareResult(name string, id FileID, b FileInfo) int {
	return cmp.Or(strings.Compare(name, b.Name), strings.Compare(string(id), string(b.ID)))
}

// topK keeps the limit smallest results in a max-heap.
type topK struct {
	limit int
	items []FileInfo
}

func (t *topK) offer(fi FileInfo) {
	if len(t.items) < t.limit {
		heap.Push(t, fi)
		return
	}
	t.items[0] = fi
	heap.Fix(t, 0)
}

func (t *topK) Len() int { return len(t.items) }
func (t *topK) Less(i, j int) bool {
	return compareResult(t.items[i].Name, t.items[i].ID, t.items[j]) > 0
}
func (t *topK) Swap(i, j int) { t.items[i], t.items[j] = t.items[j], t.items[i] }
func (t *topK) Push(x any)    { t.items = append(t.items, x.(FileInfo)) }
func (t *topK) Pop() any {
	x := t.items[len(t.items)-1]
	t.items = t.items[:len(t.items)-1]
	return x
}

// Peers returns every joined peer, sorted by ID. Like Search it reads one
// shard at a time, so each peer is reported as of some moment between the
// call and the return.
func (f *FSM) Peers() []PeerInfo {
	var out []PeerInfo
	for i := range nShards {
		f.mu.RLock()
		if i == 0 {
			out = make([]PeerInfo, 0, f.st.counts.Peers+f.st.counts.Peers/8)
		}
		for _, p := range f.st.peers[i].m {
			out = append(out, p.info())
		}
		f.mu.RUnlock()
	}
	slices.SortFunc(out, func(a, b PeerInfo) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return out
}

// Peer returns one peer's description; ok is false if it has not joined.
func (f *FSM) Peer(id PeerID) (info PeerInfo, ok bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	p := f.st.peer(id)
	if p == nil {
		return PeerInfo{}, false
	}
	return p.info(), true
}

// Authorize reports whether tok is the token peer id joined with: nil if
// so, an error wrapping ErrUnknownPeer if the peer is not in the index, or
// ErrUnauthorized if the token differs. The master uses it for requests
// that never enter the log (heartbeats).
func (f *FSM) Authorize(id PeerID, tok Token) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	p := f.st.peer(id)
	if p == nil {
		return errUnknownPeer(id)
	}
	if p.token != tok {
		return errUnauthorized(id)
	}
	return nil
}

// PeerFiles returns the IDs of the files a peer holds, sorted; nil if the
// peer holds none or has not joined.
func (f *FSM) PeerFiles(id PeerID) []FileID {
	f.mu.RLock()
	p := f.st.peer(id)
	if p == nil || p.files.len() == 0 {
		f.mu.RUnlock()
		return nil
	}
	out := make([]FileID, 0, p.files.len())
	p.files.each(func(id FileID, _ struct{}) bool {
		out = append(out, id)
		return true
	})
	f.mu.RUnlock()
	slices.Sort(out)
	return out
}

// Counts returns the size of the index.
func (f *FSM) Counts() Counts {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.counts
}

// Digest returns 64 hex digits summarising the whole replicated state:
// every peer (ID, address, token, join times), every file (ID, size, piece
// size), every holding with its name, every peer's dedup window, every
// swarm (info-hash, downloaded count) and swarm record (peer, address,
// port, key, seeder flag, changed time; not the soft seen time), and the
// tracker policy with its dedup window. Nodes
// that applied the same log have equal digests; different states differ
// with overwhelming probability. AppliedIndex is not included: compare
// digests of nodes at the same AppliedIndex. It is O(1): the digest is the
// sum modulo 2^256 of the SHA-256 of each state record, kept up to date by
// every Apply.
func (f *FSM) Digest() string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return digestString(f.st.digest)
}

func digestString(s sum256) string {
	b := s.bytes()
	return hex.EncodeToString(b[:])
}

// AppliedIndex returns the index of the last log entry passed to Apply or
// ApplyBatch, of any type, or the index carried by the last restored
// snapshot. raft does not pass barrier and no-op entries to the FSM, so this
// can trail raft's own AppliedIndex; a linearizable read should wait on
// raft's (or a Barrier), not on this.
func (f *FSM) AppliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.applied
}
