package master_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fileshare/master"
	"fileshare/master/mastertest"
	"fileshare/transport"
)

// pkiFor writes a CA with masters m1, m2 and an admin into a temporary
// folder and returns a loader of one name's credentials.
func pkiFor(t *testing.T) func(name string) *transport.TLS {
	t.Helper()
	dir := t.TempDir()
	if _, err := transport.InitFiles(dir, []string{"m1", "m2"}, []string{"127.0.0.1"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	return func(name string) *transport.TLS {
		tl, err := transport.LoadTLS(filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem"), filepath.Join(dir, "ca.pem"))
		if err != nil {
			t.Fatal(err)
		}
		return tl
	}
}

// signedArchive writes an archive of snap with meta, signed with creds'
// certificate.
func signedArchive(t *testing.T, creds *transport.TLS, meta master.ArchiveMeta, snap []byte) []byte {
	t.Helper()
	cert, err := creds.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := master.WriteSignedArchive(&buf, meta, bytes.NewReader(snap), cert); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// reforge replaces an archive's metadata with meta and recomputes the
// checksum, as anyone can: the signature section is kept as it was.
func reforge(t *testing.T, archive []byte, edit func(*master.ArchiveMeta)) []byte {
	t.Helper()
	metaLen := binary.BigEndian.Uint32(archive[12:16])
	var meta master.ArchiveMeta
	if err := json.Unmarshal(archive[16:16+metaLen], &meta); err != nil {
		t.Fatal(err)
	}
	edit(&meta)
	mj, err := json.Marshal(meta)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	out = append(out, archive[:12]...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(mj)))
	out = append(out, mj...)
	out = append(out, archive[16+metaLen:len(archive)-32]...)
	sum := sha256.Sum256(out)
	return append(out, sum[:]...)
}

// A backup signed with a master certificate verifies against its CA and
// names its signer; the checksum alone proves nothing about who made a
// file: metadata changed and the checksum recomputed reads as intact but
// fails the signature, as do a signature under another CA, one by an
// admin certificate, one by a master other than the leader named, and no
// signature at all.
func TestBackupSignatureProvesAMasterMadeIt(t *testing.T) {
	pki, other := pkiFor(t), pkiFor(t)
	snap := bytes.Repeat([]byte("snapshot "), 500)
	meta := testMeta(len(snap))
	good := signedArchive(t, pki("m1"), meta, snap)
	verify := func(archive []byte, ca *transport.TLS) (string, error) {
		t.Helper()
		gotMeta, _, sig, err := master.ReadSignedArchive(bytes.NewReader(archive), &bytes.Buffer{})
		if err != nil {
			t.Fatalf("the archive does not read as intact: %v", err)
		}
		return sig.Verify(ca, gotMeta)
	}
	if signer, err := verify(good, pki("admin")); err != nil || signer != "m1" {
		t.Fatalf("a good signature: signer %q, %v; want m1", signer, err)
	}
	for name, tc := range map[string]struct {
		archive []byte
		ca      *transport.TLS
		want    error
	}{
		"metadata changed, checksum recomputed": {reforge(t, good, func(m *master.ArchiveMeta) { m.RaftIndex++ }), pki("admin"), master.ErrBadSignature},
		"another cluster's CA":                  {good, other("admin"), master.ErrBadSignature},
		"signed with an admin certificate":      {signedArchive(t, pki("admin"), meta, snap), pki("admin"), master.ErrBadSignature},
		"signed by a master not the leader":     {signedArchive(t, pki("m2"), meta, snap), pki("admin"), master.ErrBadSignature},
		"unsigned":                              {archiveBytes(t, meta, snap), pki("admin"), master.ErrUnsignedArchive},
	} {
		t.Run(name, func(t *testing.T) {
			if signer, err := verify(tc.archive, tc.ca); !errors.Is(err, tc.want) {
				t.Fatalf("verified as signed by %q (%v); want %v", signer, err, tc.want)
			}
		})
	}
}

// Metadata no master writes is refused before anything else: a raft index
// or term near 2^64 (a restored cluster would never elect a ready
// leader), and terminal escape sequences or other control characters in
// the text an operator's terminal prints.
func TestBackupArchiveRefusesImpossibleMetadata(t *testing.T) {
	snap := []byte("abc")
	for name, edit := range map[string]func(*master.ArchiveMeta){
		"index near 2^64":         func(m *master.ArchiveMeta) { m.RaftIndex = 1<<64 - 2 },
		"term near 2^64":          func(m *master.ArchiveMeta) { m.RaftTerm = 1<<64 - 1 },
		"escape in the address":   func(m *master.ArchiveMeta) { m.LeaderAddr = "\x1b]0;pwned\x07\x1b[2J127.0.0.1:7001" },
		"C1 control in a version": func(m *master.ArchiveMeta) { m.Version = "v1\u009b31m" },
		"leader ID not an ID":     func(m *master.ArchiveMeta) { m.LeaderID = "m1\x1b[1A" },
		"member ID not an ID":     func(m *master.ArchiveMeta) { m.Members[0].ID = "m 1" },
	} {
		t.Run(name, func(t *testing.T) {
			meta := testMeta(len(snap))
			edit(&meta)
			var buf bytes.Buffer
			if _, err := master.WriteArchive(&buf, meta, bytes.NewReader(snap)); err != nil {
				t.Fatal(err)
			}
			_, _, err := master.ReadArchive(bytes.NewReader(buf.Bytes()), &bytes.Buffer{})
			if !errors.Is(err, master.ErrBadArchive) {
				t.Fatalf("got %v, want ErrBadArchive", err)
			}
			if strings.ContainsAny(err.Error(), "\x1b\x07\u009b") {
				t.Fatalf("the error %q carries the control characters it refuses", err)
			}
		})
	}
}

// A TLS master restores only a backup signed by a master of its own CA:
// an unsigned one and one from another cluster are refused before
// anything is written; the cluster's own backup restores.
func TestRestoreOnTLSMasterRequiresItsClustersSignature(t *testing.T) {
	src := mastertest.New(t, 1, mastertest.Options{TLS: true})
	src.Leader()
	path := filepath.Join(t.TempDir(), "index.fsbackup")
	meta, err := master.SaveBackup(t.Context(), src.Client(), path)
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	archive, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := src.Config(0)
	src.Kill(0)

	unsigned := filepath.Join(t.TempDir(), "unsigned.fsbackup")
	var buf bytes.Buffer
	if _, _, err := master.ReadArchive(bytes.NewReader(archive), &buf); err != nil {
		t.Fatal(err)
	}
	var ub bytes.Buffer
	if _, err := master.WriteArchive(&ub, meta, &buf); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(unsigned, ub.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	foreign, err := mastertest.NewUnstarted(1, mastertest.Options{TLS: true, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		cfg     master.Config
		archive string
		want    error
	}{
		"unsigned":           {cfg, unsigned, master.ErrUnsignedArchive},
		"another cluster CA": {foreign.Config(0), path, master.ErrBadSignature},
	} {
		t.Run(name, func(t *testing.T) {
			c := tc.cfg
			c.DataDir, c.Restore = t.TempDir(), tc.archive
			m, err := master.New(t.Context(), c)
			if !errors.Is(err, tc.want) {
				if m != nil {
					m.CloseNow()
				}
				t.Fatalf("restore: got %v, want %v", err, tc.want)
			}
			if snaps, _ := filepath.Glob(filepath.Join(c.DataDir, "snapshots", "*")); len(snaps) != 0 {
				t.Fatalf("a refused restore left snapshots behind: %v", snaps)
			}
		})
	}
	cfg.DataDir, cfg.Restore = t.TempDir(), path
	m := startMaster(t, cfg)
	if m == nil {
		t.Fatal("the cluster's own signed backup was not restored")
	}
}
