package peer

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"fileshare/client"
	"fileshare/fsm"
)

// Files in a peer's data dir.
const (
	identityFile  = "identity.json"
	hashCacheFile = "hashes.cache"
	lockFile      = "lock"
)

// secretLen is the length of a peer's random secret. The masters store only
// its SHA-256 and require it on every write for the peer, so only this peer
// can change or remove its registrations.
const secretLen = 32

// identityJSON is identity.json: the peer's stable ID and its secret. The
// file is created once with mode 0600 and never rewritten.
type identityJSON struct {
	PeerID string `json:"peer_id"`
	Secret string `json:"secret"` // hex
}

// loadIdentity reads the identity in dir, or creates one the first time:
// the ID is want if given, else "peer-" and 12 random hex digits; the secret
// is 32 random bytes.
func loadIdentity(dir, want string) (client.Identity, error) {
	path := filepath.Join(dir, identityFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return createIdentity(path, want)
	}
	if err != nil {
		return client.Identity{}, fmt.Errorf("%w: read %s: %v", ErrIdentity, path, err)
	}
	id, err := decodeIdentity(b)
	if err != nil {
		return client.Identity{}, fmt.Errorf("%w: %s: %v; restore it from a backup, or delete it to start as a new peer", ErrIdentity, path, err)
	}
	if want != "" && id.PeerID != want {
		return client.Identity{}, fmt.Errorf("%w: the data dir %s belongs to peer %q, not %q; use another --data-dir or drop --id", ErrIdentity, dir, id.PeerID, want)
	}
	return id, nil
}

func decodeIdentity(b []byte) (client.Identity, error) {
	var j identityJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return client.Identity{}, err
	}
	if err := fsm.PeerID(j.PeerID).Validate(); err != nil {
		return client.Identity{}, err
	}
	secret, err := hex.DecodeString(j.Secret)
	if err != nil || len(secret) != secretLen {
		return client.Identity{}, fmt.Errorf("secret must be %d hex-encoded bytes", secretLen)
	}
	return client.Identity{PeerID: j.PeerID, Secret: secret}, nil
}

func createIdentity(path, want string) (client.Identity, error) {
	id := client.Identity{PeerID: want, Secret: make([]byte, secretLen)}
	rand.Read(id.Secret)
	if id.PeerID == "" {
		var r [6]byte
		rand.Read(r[:])
		id.PeerID = "peer-" + hex.EncodeToString(r[:])
	}
	if err := fsm.PeerID(id.PeerID).Validate(); err != nil {
		return client.Identity{}, fmt.Errorf("%w: peer ID: %v", ErrConfig, err)
	}
	b, err := json.MarshalIndent(identityJSON{PeerID: id.PeerID, Secret: hex.EncodeToString(id.Secret)}, "", "  ")
	if err != nil {
		return client.Identity{}, err
	}
	if err := writeFileAtomic(path, append(b, '\n'), 0o600); err != nil {
		return client.Identity{}, fmt.Errorf("%w: write %s: %v", ErrIdentity, path, err)
	}
	return id, nil
}

// lockDataDir takes an exclusive advisory lock on the data dir, held until
// the returned file is closed (or the process dies).
func lockDataDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%w: open lock in data dir %s: %v; choose a --data-dir this user can write", ErrConfig, dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s; stop the other peer or choose another --data-dir", ErrDataDirLocked, dir)
		}
		return nil, fmt.Errorf("lock data dir %s: %w", dir, err)
	}
	return f, nil
}
