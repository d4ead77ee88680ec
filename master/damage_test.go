package master_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fileshare/client"
	"fileshare/internal/poll"
	"fileshare/master"
)

// newestSnapshot returns the directory of the newest snapshot in a data
// dir, or "" if there is none.
func newestSnapshot(t *testing.T, dataDir string) string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dataDir, "snapshots"))
	if err != nil {
		return ""
	}
	var best string
	var bestTime time.Time
	for _, e := range ents {
		if !e.IsDir() || strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		dir := filepath.Join(dataDir, "snapshots", e.Name())
		st, err := os.Stat(filepath.Join(dir, "meta.json"))
		if err != nil {
			continue
		}
		if best == "" || st.ModTime().After(bestTime) {
			best, bestTime = dir, st.ModTime()
		}
	}
	return best
}

func flipAll(t *testing.T, path string, needle []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for i := 0; ; {
		j := bytes.Index(b[i:], needle)
		if j < 0 {
			break
		}
		b[i+j+len(needle)/2] ^= 0x20
		i += j + len(needle)
		n++
	}
	if n == 0 {
		t.Fatalf("%q does not occur in %s; the test cannot damage the entry it means to", needle, path)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func truncateHalf(t *testing.T, path string) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, st.Size()/2); err != nil {
		t.Fatal(err)
	}
}

// A master whose raft log or newest snapshot was damaged while it was
// stopped refuses to start with ErrDamaged and says how to recover; after
// its data dir is wiped and it re-joins, it holds the cluster's index
// again. It never serves or replicates the damaged state.
func TestDamagedDataDirIsRefusedAndRejoinCatchesUp(t *testing.T) {
	c := newCluster(t, 3, func(cfg *master.Config) {
		cfg.SnapshotThreshold = 32
		cfg.SnapshotInterval = 50 * time.Millisecond
		cfg.TrailingLogs = 64
		cfg.PeerLease = time.Hour // the test's peer sends no heartbeats
	})
	leader := c.Leader()
	v := c.Follower(leader)
	cfg := c.Config(v)
	var others []string
	for i := range c.Len() {
		if i != v {
			others = append(others, c.Addr(i))
		}
	}
	cl := c.Client(others...)
	dana := identity("damage-dana")
	if _, err := cl.Join(t.Context(), dana, "127.0.0.1:9301"); err != nil {
		t.Fatal(err)
	}
	var victim *master.Master // the re-joined victim, once mastertest no longer runs it
	stopVictim := func() {
		if victim == nil {
			c.Stop(v)
			return
		}
		if err := victim.Close(); err != nil { // a second Close at cleanup is a no-op
			t.Logf("close victim: %v", err)
		}
		victim = nil
	}
	kinds := []struct {
		name   string
		damage func(t *testing.T, last string)
	}{
		{"flip bytes of a log entry in raft.db", func(t *testing.T, last string) {
			flipAll(t, filepath.Join(cfg.DataDir, "raft.db"), []byte(last))
		}},
		{"truncate raft.db", func(t *testing.T, _ string) { truncateHalf(t, filepath.Join(cfg.DataDir, "raft.db")) }},
		{"flip bytes of the newest state.bin", func(t *testing.T, _ string) {
			p := filepath.Join(newestSnapshot(t, cfg.DataDir), "state.bin")
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)/2] ^= 0xff
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"rewrite the newest state.bin with a matching CRC", func(t *testing.T, _ string) {
			// Damage the CRC cannot see (as a buggy writer would make):
			// only restoring the snapshot finds it, and raft would then
			// quietly fall back to an older snapshot.
			dir := newestSnapshot(t, cfg.DataDir)
			p := filepath.Join(dir, "state.bin")
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)/2] ^= 0xff
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			mp := filepath.Join(dir, "meta.json")
			var meta map[string]any
			mb, err := os.ReadFile(mp)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(mb, &meta); err != nil {
				t.Fatal(err)
			}
			h := crc64.New(crc64.MakeTable(crc64.ECMA))
			h.Write(b)
			meta["CRC"] = h.Sum(nil) // []byte marshals as base64, as raft writes it
			if mb, err = json.Marshal(meta); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(mp, mb, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"truncate the newest state.bin", func(t *testing.T, _ string) {
			truncateHalf(t, filepath.Join(newestSnapshot(t, cfg.DataDir), "state.bin"))
		}},
		{"corrupt the newest meta.json", func(t *testing.T, _ string) {
			p := filepath.Join(newestSnapshot(t, cfg.DataDir), "meta.json")
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b[:len(b)/3], 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	}
	parent := t // the re-joined victim outlives each subtest
	for round, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			// New entries, the last of them unique to this round, and a
			// snapshot of them on the victim.
			var last string
			for i := range 40 {
				last = fmt.Sprintf("dmg-r%d-f%02d-unique.bin", round, i)
				if _, err := cl.Register(t.Context(), dana, []client.FileEntry{fileEntry(last)}); err != nil {
					t.Fatal(err)
				}
			}
			want := waitVictimCaughtUp(t, c.Master((v+1)%3), func() *master.Master {
				if victim != nil {
					return victim
				}
				return c.Master(v)
			})
			poll.Until(t, 20*time.Second, "the victim has a snapshot", func() bool { return newestSnapshot(t, cfg.DataDir) != "" })
			stopVictim()
			k.damage(t, last)

			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			m, err := master.New(ctx, cfg)
			if err == nil {
				m.CloseNow()
				t.Fatalf("a master started from a data dir with %s", k.name)
			}
			if !errors.Is(err, master.ErrDamaged) {
				t.Fatalf("start after %s: got %v, want an error wrapping ErrDamaged", k.name, err)
			}
			if !strings.Contains(err.Error(), "Join") || !strings.Contains(err.Error(), cfg.DataDir) {
				t.Fatalf("the error does not name the data dir and how to recover: %v", err)
			}
			t.Logf("refused: %v", err)

			// Wipe and re-join: the victim catches up with the cluster.
			if err := os.RemoveAll(cfg.DataDir); err != nil {
				t.Fatal(err)
			}
			jcfg := cfg
			jcfg.InitialCluster, jcfg.Join = nil, others
			victim = startMaster(parent, jcfg)
			got := waitVictimCaughtUp(t, c.Master((v+1)%3), func() *master.Master { return victim })
			if got != want {
				t.Fatalf("re-joined victim holds digest %s, the cluster %s", got, want)
			}
		})
	}
}

// waitVictimCaughtUp waits until the victim has applied everything
// another member (ref) has, with the same digest, and returns that digest.
func waitVictimCaughtUp(t *testing.T, ref *master.Master, victim func() *master.Master) string {
	t.Helper()
	var digest, last string
	defer func() {
		if t.Failed() {
			t.Log(last)
		}
	}()
	poll.Until(t, 30*time.Second, "the victim holds the same index as another member", func() bool {
		l := ref.Status(t.Context(), false)
		vs := victim().Status(t.Context(), false)
		digest = l.Digest
		last = fmt.Sprintf("ref applied %d/%d digest %s; victim applied %d/%d digest %s", l.AppliedIndex, l.LastIndex, l.Digest, vs.AppliedIndex, vs.LastIndex, vs.Digest)
		return l.AppliedIndex == l.LastIndex && vs.AppliedIndex == l.AppliedIndex && vs.Digest == l.Digest
	})
	return digest
}
