package peer

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"fileshare/client"
)

// Files in a peer's data dir.
const (
	keyFile       = "peer.key"
	hashCacheFile = "hashes.cache"
	lockFile      = "lock"
	// legacyIdentityFile held an ID and a bearer secret in earlier
	// versions; a peer refuses to start beside one (see loadIdentity).
	legacyIdentityFile = "identity.json"
)

// loadIdentity reads the peer's Ed25519 key from dir, or creates one the
// first time (mode 0600, never rewritten). The peer's ID is derived from
// the key (client.PeerIDOf), so it is stable for as long as the key file
// lives and nobody else can claim it.
func loadIdentity(dir string) (client.Identity, error) {
	if _, err := os.Lstat(filepath.Join(dir, legacyIdentityFile)); err == nil {
		return client.Identity{}, fmt.Errorf("%w: %s holds an identity from an earlier FileShare, whose peers proved themselves with a secret; peers are now identified by a key. Move %s out of the data dir and start the peer again: it gets a new key and ID and registers its files anew, and the old ID expires from the index on its own", ErrIdentity, filepath.Join(dir, legacyIdentityFile), legacyIdentityFile)
	}
	path := filepath.Join(dir, keyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return createIdentity(path)
	}
	if err != nil {
		return client.Identity{}, fmt.Errorf("%w: read %s: %v", ErrIdentity, path, err)
	}
	key, err := decodeKey(b)
	if err != nil {
		return client.Identity{}, fmt.Errorf("%w: %s: %v; restore it from a backup, or delete it to start as a new peer", ErrIdentity, path, err)
	}
	return client.IdentityFromKey(key), nil
}

// decodeKey parses a PEM "PRIVATE KEY" (PKCS #8) holding an Ed25519 key.
func decodeKey(b []byte) (ed25519.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, errors.New("not a PEM PRIVATE KEY")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("the key is a %T, not Ed25519", k)
	}
	return ek, nil
}

func encodeKey(k ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func createIdentity(path string) (client.Identity, error) {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return client.Identity{}, fmt.Errorf("%w: generate a key: %v", ErrIdentity, err)
	}
	b, err := encodeKey(k)
	if err != nil {
		return client.Identity{}, err
	}
	if err := writeFileAtomic(path, b, 0o600); err != nil {
		return client.Identity{}, fmt.Errorf("%w: write %s: %v", ErrIdentity, path, err)
	}
	return client.IdentityFromKey(k), nil
}

// lockDataDir takes an exclusive advisory lock on the data dir, held until
// the returned file is closed (or the process dies).
func lockDataDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, configErr("DataDir", "open lock in data dir %s: %v; choose a {DataDir} this user can write", dir, err)
	}
	if err := tryLock(f); err != nil {
		f.Close()
		if errors.Is(err, errLocked) {
			return nil, fieldErr(ErrDataDirLocked, "DataDir", "%s; stop the other peer or choose another {DataDir}", dir)
		}
		return nil, fmt.Errorf("lock data dir %s: %w", dir, err)
	}
	return f, nil
}
