package master_test

import (
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"fileshare/internal/freeport"
	"fileshare/master"
)

func TestNewRejectsImpossibleConfigs(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	notADir := t.TempDir() + "/file"
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	free := freeport.Loopback(t)
	nowhere := freeport.Loopback(t)
	self := []master.Member{{ID: "m1", Addr: free}}
	for _, tc := range []struct {
		name string
		cfg  master.Config
		want string
	}{
		{"no id", master.Config{DataDir: t.TempDir(), Listen: free, InitialCluster: self}, "ID"},
		{"initial cluster without self", master.Config{ID: "m9", DataDir: t.TempDir(), Listen: free, InitialCluster: self}, "does not contain this master's own ID"},
		{"duplicate member", master.Config{ID: "m1", DataDir: t.TempDir(), Listen: free, InitialCluster: append(self, master.Member{ID: "m1", Addr: nowhere})}, "names m1 twice"},
		{"port in use", master.Config{ID: "m1", DataDir: t.TempDir(), Listen: busy.Addr().String(), InitialCluster: []master.Member{{ID: "m1", Addr: busy.Addr().String()}}}, "already in use"},
		{"data dir not a directory", master.Config{ID: "m1", DataDir: notADir + "/sub", Listen: free, InitialCluster: self}, "data dir"},
		{"join where no master listens", master.Config{ID: "m1", DataDir: t.TempDir(), Listen: free, Join: []string{nowhere}, JoinTimeout: time.Second}, "check that a master listens"},
		{"both bootstrap and join", master.Config{ID: "m1", DataDir: t.TempDir(), Listen: free, InitialCluster: self, Join: []string{nowhere}}, "not both"},
		{"wildcard listen without advertise", master.Config{ID: "m1", DataDir: t.TempDir(), Listen: "0.0.0.0:0", Join: []string{nowhere}, Insecure: true}, "set Advertise"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := master.New(t.Context(), tc.cfg)
			if err == nil {
				m.CloseNow()
				t.Fatalf("New succeeded; want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %q; want it to contain %q", err, tc.want)
			}
		})
	}
}
