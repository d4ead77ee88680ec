package peer

import (
	"fmt"
	"io/fs"

	"fileshare/fsm"
	"fileshare/transport"
)

// cacheEntry is one file's piece hashes, valid while the file at Path keeps
// this Size and ModTime (and, when known, this Seal: see fileSeal). Keying by (path, size, mtime) is what rsync, git and
// Syncthing do: a changed file almost always changes one of them, and a
// restart then rehashes nothing. An edit that keeps size and mtime (rare, and
// only by deliberate effort) is caught by downloaders, which verify every
// piece against the hashes and drop this peer for that file.
type cacheEntry struct {
	Path      string // slash-separated, relative to the share folder
	Size      int64
	ModTime   int64 // Unix nanoseconds
	PieceSize int64
	Hashes    []byte // SHA-256 of each piece, 32 bytes per piece
	// Seal is the file's seal when it was hashed; zero if unknown (another
	// OS, a cache from an older build). Settled is true if the hashing
	// read the file only after it had settled (fileSeal.settled), so that
	// while the file keeps Seal every piece matches Hashes.
	Seal    fileSeal
	Settled bool
}

// hashCache is the hash cache file: msgpack (the wire's codec) of this
// struct, rewritten atomically after a scan that changed it.
type hashCache struct {
	Version int
	Entries []cacheEntry
}

const hashCacheVersion = 1

// fresh reports whether e still describes a file of this size, mtime and
// seal (a known seal must be equal: a file rewritten with its mtime put
// back keeps its size and mtime but not its ctime), hashed with the piece
// size this build uses for it.
func (e cacheEntry) fresh(size, mtime int64, seal fileSeal) bool {
	return e.Size == size && e.ModTime == mtime && e.PieceSize == PieceSizeFor(size) &&
		(!e.Seal.known() || e.Seal == seal)
}

func encodeHashCache(entries map[string]cacheEntry) ([]byte, error) {
	c := hashCache{Version: hashCacheVersion, Entries: make([]cacheEntry, 0, len(entries))}
	for _, e := range entries {
		c.Entries = append(c.Entries, e)
	}
	return transport.Marshal(&c)
}

// decodeHashCache parses a hash cache and validates every entry: a valid
// relative path (no "..", not absolute), a non-negative size, a valid piece
// size, a hash list of exactly 32 bytes per piece, and no path twice. A
// cache that fails is discarded by the caller (and the files rehashed).
func decodeHashCache(b []byte) (map[string]cacheEntry, error) {
	var c hashCache
	if err := transport.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("hash cache: %w", err)
	}
	if c.Version != hashCacheVersion {
		return nil, fmt.Errorf("hash cache: version %d, want %d", c.Version, hashCacheVersion)
	}
	out := make(map[string]cacheEntry, len(c.Entries))
	for _, e := range c.Entries {
		if !fs.ValidPath(e.Path) || e.Path == "." {
			return nil, fmt.Errorf("hash cache: invalid path %q", e.Path)
		}
		if _, dup := out[e.Path]; dup {
			return nil, fmt.Errorf("hash cache: path %q appears twice", e.Path)
		}
		if e.Size < 0 || e.PieceSize < fsm.MinPieceSize || e.PieceSize > fsm.MaxPieceSize || e.PieceSize&(e.PieceSize-1) != 0 {
			return nil, fmt.Errorf("hash cache: %s: bad size %d or piece size %d", e.Path, e.Size, e.PieceSize)
		}
		n := PieceCount(e.Size, e.PieceSize)
		if n > MaxPieces || len(e.Hashes) != 32*n {
			return nil, fmt.Errorf("hash cache: %s: %d hash bytes, want %d", e.Path, len(e.Hashes), 32*n)
		}
		out[e.Path] = e
	}
	return out, nil
}

// leaves splits a raw hash list (32 bytes per piece) into piece hashes.
func leaves(raw []byte) [][32]byte {
	out := make([][32]byte, len(raw)/32)
	for i := range out {
		copy(out[i][:], raw[32*i:])
	}
	return out
}

// rawHashes joins piece hashes into a raw hash list.
func rawHashes(hs [][32]byte) []byte {
	out := make([]byte, 0, 32*len(hs))
	for _, h := range hs {
		out = append(out, h[:]...)
	}
	return out
}
