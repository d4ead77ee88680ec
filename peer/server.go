package peer

// This file owns the piece server: the accept loop and one goroutine per
// upload connection, all in Peer.wg. Peer.conns holds every upload
// connection, so that closing the peer severs them; each connection's
// open file and buffers belong to its goroutine. It reads what the sync
// goroutine publishes through Peer.served.

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"fileshare/internal/httplimit"
	"fileshare/transport"
)

// uploadReclaimIdle is how long a connection may hold an upload slot
// without a complete request in it while every slot is taken: past that,
// the next connection takes its slot. A downloader pipelines its
// requests, so one that is fetching is never idle that long; one that
// connects and sends nothing, or dribbles a request, is.
const uploadReclaimIdle = 2 * time.Second

// servePieces accepts piece connections until the listener closes. At most
// Config.MaxUploads connections are served at once (see uploadSlots for
// how a full table reclaims slots that make no progress and shares the
// slots among sources); a connection that gets no slot gets one statusBusy
// answer and is closed, so its downloader turns to other holders and
// retries this one later. It runs in p.wg (New starts it) and starts each
// connection's goroutine in p.wg too; since it holds a count itself, those
// Adds never race Close's Wait.
func (p *Peer) servePieces(ln net.Listener) {
	slots := newUploadSlots(p.cfg.MaxUploads)
	for {
		conn, err := ln.Accept()
		if err != nil {
			return // the Mux was closed
		}
		if !p.conns.Add(conn) {
			conn.Close()
			return
		}
		slot, victim := slots.admit(conn, time.Now())
		if victim != nil {
			p.counters.uploadsReclaimed.Add(1)
			p.logger.Debug("reclaimed an upload slot", "remote", victim.RemoteAddr(), "for", conn.RemoteAddr())
			// Closing a TLS connection may wait on its close alert; not here.
			p.wg.Go(func() { victim.Close() })
		}
		if slot != nil {
			p.wg.Go(func() {
				defer slots.release(slot)
				defer p.conns.Remove(conn)
				p.serveConn(conn, slot)
			})
			continue
		}
		p.wg.Go(func() {
			defer p.conns.Remove(conn)
			_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = conn.Write(errorResponse(statusBusy, fmt.Sprintf("serving %d uploads already; try again soon", p.cfg.MaxUploads)))
			conn.Close()
		})
	}
}

// uploadSlot is one connection's hold on an upload slot.
type uploadSlot struct {
	conn net.Conn
	src  string // httplimit.Source of the remote address
	// idleSince is when the connection last finished an answer (or was
	// admitted), in Unix nanoseconds; 0 while it answers a request.
	// Written by the connection's goroutine, read by admit.
	idleSince atomic.Int64
	held      bool // under uploadSlots.mu: false once released or reclaimed
}

// markIdle and markBusy are called by the connection's goroutine around
// each request; a nil slot (unit tests serving a bare connection) is
// ignored.
func (s *uploadSlot) markIdle(now time.Time) {
	if s != nil {
		s.idleSince.Store(now.UnixNano())
	}
}

func (s *uploadSlot) markBusy() {
	if s != nil {
		s.idleSince.Store(0)
	}
}

// uploadSlots is the table of upload slots. While it has room every
// connection gets a slot. When it is full, a newcomer takes the slot of
//
//  1. the connection that has gone longest without a complete request,
//     if that is at least uploadReclaimIdle (a slot held without
//     progress is reclaimed); else
//  2. a connection of the source holding the most slots, if that source
//     holds at least two more than the newcomer's (the slots are shared
//     fairly among sources: one address, or one IPv6 /64, cannot keep
//     every slot while others wait);
//
// and otherwise is refused. Only the accept loop calls admit; release is
// called by each connection's goroutine.
type uploadSlots struct {
	max      int
	mu       sync.Mutex
	held     map[*uploadSlot]struct{}
	bySource map[string]int
}

func newUploadSlots(max int) *uploadSlots {
	return &uploadSlots{max: max, held: map[*uploadSlot]struct{}{}, bySource: map[string]int{}}
}

// admit gives conn a slot, or returns nil if none can be had. victim, if
// not nil, is the connection whose slot was reclaimed; the caller closes
// it.
func (u *uploadSlots) admit(conn net.Conn, now time.Time) (slot *uploadSlot, victim net.Conn) {
	src := httplimit.Source(conn.RemoteAddr())
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.held) >= u.max {
		v := u.pickVictim(src, now)
		if v == nil {
			return nil, nil
		}
		u.drop(v)
		victim = v.conn
	}
	slot = &uploadSlot{conn: conn, src: src, held: true}
	slot.markIdle(now)
	u.held[slot] = struct{}{}
	u.bySource[src]++
	return slot, victim
}

// pickVictim chooses the slot a newcomer from src may take (see
// uploadSlots), or nil. Called with u.mu held.
func (u *uploadSlots) pickVictim(src string, now time.Time) *uploadSlot {
	// idleSince changes under the connections' goroutines: compare the
	// values read once.
	var idlest *uploadSlot
	var idlestT int64
	for s := range u.held {
		if t := s.idleSince.Load(); t != 0 && (idlest == nil || t < idlestT) {
			idlest, idlestT = s, t
		}
	}
	if idlest != nil && now.UnixNano()-idlestT >= int64(uploadReclaimIdle) {
		return idlest
	}
	top, most := "", 0
	for s, n := range u.bySource {
		if n > most || (n == most && s < top) {
			top, most = s, n
		}
	}
	if most < u.bySource[src]+2 {
		return nil
	}
	// Of the top source's connections, take the idlest (one between
	// requests loses least), else any.
	var pick *uploadSlot
	var pickT int64
	for s := range u.held {
		if s.src != top {
			continue
		}
		t := s.idleSince.Load()
		if pick == nil || (t != 0 && (pickT == 0 || t < pickT)) {
			pick, pickT = s, t
		}
	}
	return pick
}

// drop removes s from the table. Called with u.mu held.
func (u *uploadSlots) drop(s *uploadSlot) {
	if !s.held {
		return
	}
	s.held = false
	delete(u.held, s)
	if u.bySource[s.src]--; u.bySource[s.src] <= 0 {
		delete(u.bySource, s.src)
	}
}

// release frees s, unless it was reclaimed already.
func (u *uploadSlots) release(s *uploadSlot) {
	u.mu.Lock()
	u.drop(s)
	u.mu.Unlock()
}

// serveConn answers the requests of one connection in order until the
// downloader hangs up, goes idle for Config.IdleTimeout, sends a malformed
// request, or an I/O step misses its Config.IOTimeout deadline. Nothing a
// remote sends can make it panic or read outside the share folder: the
// request names a file only by ID, the ID maps to a path recorded by a scan
// of the share folder, and the open goes through openShared.
//
// slot, if not nil, is told when the connection waits for a request and
// when it answers one, so a full slot table can reclaim a connection that
// makes no progress.
func (p *Peer) serveConn(conn net.Conn, slot *uploadSlot) {
	defer conn.Close()
	br := bufio.NewReaderSize(conn, 4<<10)
	// sendfile is possible only on a plaintext connection that can take
	// a file directly (a unit test's TCP connection: the Mux's piece
	// connections are TLS); there only size and mtime tell a changed file.
	// Otherwise each piece is read, checked against its registered hash
	// (the peer would rather say "changed" than send bad data), and sent
	// in one buffered write with its header. The check is a hash only the
	// first time: while the file keeps the seal it was hashed under, the
	// piece's proof stands (see pieceProof), and the holder's SHA-256
	// work, which doubled the CPU a download costs on a shared machine,
	// is not repeated for every downloader.
	_, canSendfile := conn.(io.ReaderFrom)
	canSendfile = canSendfile && transport.CallerOf(conn).Insecure
	var (
		open    *os.File
		openFor *sharedFile
		buf     []byte
		req     [requestLen]byte
	)
	defer func() {
		if open != nil {
			open.Close()
		}
	}()
	for {
		now := time.Now()
		slot.markIdle(now)
		_ = conn.SetReadDeadline(now.Add(p.cfg.IdleTimeout))
		if _, err := io.ReadFull(br, req[:]); err != nil {
			return
		}
		slot.markBusy()
		_ = conn.SetWriteDeadline(time.Now().Add(p.cfg.IOTimeout))
		r, err := decodeRequest(req[:])
		if err != nil {
			p.logger.Debug("closing piece connection after a malformed request", "remote", conn.RemoteAddr(), "err", err)
			_, _ = conn.Write(errorResponse(statusBadRequest, err.Error()))
			return
		}
		sf := p.servedFile(r.fileID())
		if sf == nil {
			if _, err := conn.Write(errorResponse(statusNotFound, "this peer does not share file "+r.fileID())); err != nil {
				return
			}
			continue
		}
		if r.Op == opHashes {
			h := respHeader{Status: statusOK, Len: uint32(len(sf.Hashes))}.encode()
			bufs := net.Buffers{h[:], sf.Hashes}
			if _, err := bufs.WriteTo(conn); err != nil {
				return
			}
			continue
		}
		n := PieceCount(sf.Size, sf.PieceSize)
		if int64(r.Index) >= int64(n) {
			_, _ = conn.Write(errorResponse(statusBadRequest, fmt.Sprintf("piece %d out of range: the file has %d pieces", r.Index, n)))
			return
		}
		if openFor != sf {
			if open != nil {
				open.Close()
				open, openFor = nil, nil
			}
			f, err := openShared(p.store.root, sf.Path)
			if err != nil {
				p.logger.Warn("refusing to serve a path that is not a regular file inside the share folder", "path", sf.Path, "file", sf.ID, "err", err)
				p.kickSync()
				p.counters.refusedGone.Add(1)
				if _, err := conn.Write(errorResponse(statusNotFound, "file "+sf.ID+" is no longer available here")); err != nil {
					return
				}
				continue
			}
			open, openFor = f, sf
		}
		if st, err := open.Stat(); err != nil || st.Size() != sf.Size || st.ModTime().UnixNano() != sf.ModTime {
			p.noteChanged(sf.Path) // rescan: rehash, re-register under its new ID
			p.counters.refusedChanged.Add(1)
			if _, err := conn.Write(errorResponse(statusChanged, changedMessage(sf))); err != nil {
				return
			}
			continue
		}
		off := int64(r.Index) * sf.PieceSize
		l := pieceLen(sf.Size, sf.PieceSize, int(r.Index))
		hdr := respHeader{Status: statusOK, Len: uint32(l)}.encode()
		if canSendfile && p.cfg.corruptPieces == nil {
			if _, err := conn.Write(hdr[:]); err != nil {
				return
			}
			if _, err := open.Seek(off, io.SeekStart); err != nil {
				return
			}
			// An *io.LimitedReader over an *os.File is what the
			// net package hands to sendfile(2).
			if n, err := io.Copy(conn, &io.LimitedReader{R: open, N: l}); err != nil || n != l {
				return // the stream is out of step: hang up
			}
			p.counters.piecesServed.Add(1)
			p.counters.bytesServed.Add(uint64(l))
			continue
		}
		if cap(buf) < respHeaderLen+int(sf.PieceSize) {
			buf = make([]byte, respHeaderLen+int(sf.PieceSize))
		}
		b := buf[:respHeaderLen+int(l)]
		copy(b, hdr[:])
		readAt := time.Now()
		if _, err := open.ReadAt(b[respHeaderLen:], off); err != nil {
			p.logger.Warn("cannot read piece of shared file", "path", sf.Path, "piece", r.Index, "err", err)
			return // the header is not sent yet, but the file is broken: hang up
		}
		// The seal is taken after the read: if it is still the proof's,
		// the bytes read are the sealed ones (see fileSeal).
		seal := fileSeal{}
		if st, err := open.Stat(); err == nil {
			seal = sealOf(st)
		}
		if !sf.proof.proven(seal, int(r.Index)) {
			if sha256.Sum256(b[respHeaderLen:]) != [32]byte(sf.Hashes[32*int(r.Index):]) {
				p.logger.Warn("shared file changed on disk: a piece no longer matches its registered hash; rehashing it", "path", sf.Path, "file", sf.ID, "piece", r.Index)
				p.noteChanged(sf.Path)
				p.counters.refusedChanged.Add(1)
				if _, err := conn.Write(errorResponse(statusChanged, changedMessage(sf))); err != nil {
					return
				}
				continue
			}
			sf.proof.prove(seal, int(r.Index), readAt)
		}
		if p.cfg.corruptPieces != nil {
			p.cfg.corruptPieces(sf.ID, int(r.Index), b[respHeaderLen:])
		}
		if _, err := conn.Write(b); err != nil {
			return
		}
		p.counters.piecesServed.Add(1)
		p.counters.bytesServed.Add(uint64(l))
	}
}

// changedMessage is the statusChanged answer for sf.
func changedMessage(sf *sharedFile) string {
	return "file " + sf.ID + " changed on disk since this peer registered it; it is being rehashed and registered under its new ID"
}

// servedFile returns the file this peer serves under id, or nil.
func (p *Peer) servedFile(id string) *sharedFile {
	m := p.served.Load()
	if m == nil {
		return nil
	}
	return (*m)[id]
}
