package proccluster

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// The argv says exactly what the spec says, flags in a fixed order,
// --join taking precedence over --initial-cluster.
func TestArgsFollowTheSpec(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec Spec
		want string
	}{
		{"bootstrap", Spec{ID: "m1", DataDir: "/d/m1", Listen: "127.0.0.1:1", HTTP: "127.0.0.1:2",
			InitialCluster: []Voter{{"m1", "127.0.0.1:1"}, {"m2", "127.0.0.1:3"}}, Flags: []string{"--log-level", "warn"}},
			"master --id m1 --data-dir /d/m1 --listen 127.0.0.1:1 --http 127.0.0.1:2 --initial-cluster m1=127.0.0.1:1,m2=127.0.0.1:3 --log-level warn"},
		{"advertise equal to listen is left out", Spec{ID: "m1", DataDir: "d", Listen: "a:1", Advertise: "a:1"},
			"master --id m1 --data-dir d --listen a:1"},
		{"advertise and join", Spec{ID: "m2", DataDir: "d", Listen: "a:1", Advertise: "p:1", InitialCluster: []Voter{{"m1", "x:1"}},
			Join: []string{"x:1", "y:1"}, JoinTimeout: time.Minute},
			"master --id m2 --data-dir d --listen a:1 --advertise p:1 --join x:1,y:1 --join-timeout 1m0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := strings.Join(tc.spec.Args(), " "); got != tc.want {
				t.Fatalf("Args() = %q\nwant      %q", got, tc.want)
			}
		})
	}
}

// New rejects a spec that cannot start a master, naming what is missing.
func TestNewRejectsIncompleteSpecs(t *testing.T) {
	_, err := New(Config{Binary: "x", Masters: []Spec{{ID: "m1", Listen: "a:1", LogPath: "l"}}})
	if !errors.Is(err, ErrBadSpec) || !strings.Contains(err.Error(), "DataDir") {
		t.Fatalf("New with no DataDir: %v, want ErrBadSpec naming DataDir", err)
	}
	if _, err := New(Config{Masters: []Spec{{ID: "m1"}}}); !errors.Is(err, ErrBadSpec) {
		t.Fatalf("New with no Binary: %v, want ErrBadSpec", err)
	}
}
