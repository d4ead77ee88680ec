package main

import (
	"errors"
	"io"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	jepsenlike "fileshare/jepsen-like"
	"fileshare/master"
	"fileshare/peer"
)

// flagBinding is one command's flags bound to its library's Config.
type flagBinding struct {
	name     string
	cfg      any // pointer to the Config the flags were bound to
	defaults any // the library's DefaultConfig()
	fs       *pflag.FlagSet
	min      int // at least this many flags bind a Config field
}

func flagBindings() []flagBinding {
	var out []flagBinding
	{
		fs := pflag.NewFlagSet("master", pflag.ContinueOnError)
		var cfg master.Config
		var initial, join string
		var tf tlsFlags
		bindMasterFlags(fs, &cfg, &initial, &join, &tf)
		out = append(out, flagBinding{"master", &cfg, master.DefaultConfig(), fs, 40})
	}
	{
		fs := pflag.NewFlagSet("peer", pflag.ContinueOnError)
		var cfg peer.Config
		var masters, httpAddr string
		var keep bool
		var tf tlsFlags
		bindPeerFlags(fs, &cfg, &masters, &httpAddr, &keep, &tf)
		out = append(out, flagBinding{"peer", &cfg, peer.DefaultConfig(), fs, 7})
	}
	{
		fs := pflag.NewFlagSet("jepsen", pflag.ContinueOnError)
		var cfg jepsenlike.Config
		var nemesis, wls, netMode string
		var noNetns bool
		bindJepsenFlags(fs, &cfg, &nemesis, &wls, &netMode, &noNetns)
		out = append(out, flagBinding{"jepsen", &cfg, jepsenlike.DefaultConfig(), fs, 12})
	}
	return out
}

// leafFields maps the address of every non-struct field under v (a
// struct) to its path, "Tracker.Interval".
func leafFields(v reflect.Value, prefix string, out map[uintptr]string) {
	for i := range v.NumField() {
		f, sf := v.Field(i), v.Type().Field(i)
		if !sf.IsExported() {
			continue
		}
		if f.Kind() == reflect.Struct {
			leafFields(f, prefix+sf.Name+".", out)
			continue
		}
		out[f.Addr().Pointer()] = prefix + sf.Name
	}
}

func fieldByPath(v reflect.Value, path string) reflect.Value {
	for _, name := range strings.Split(path, ".") {
		v = v.FieldByName(name)
	}
	return v
}

// boundFields returns, for each flag of b bound to a field of b.cfg, the
// field's path.
func boundFields(b flagBinding) map[*pflag.Flag]string {
	fields := map[uintptr]string{}
	leafFields(reflect.ValueOf(b.cfg).Elem(), "", fields)
	out := map[*pflag.Flag]string{}
	b.fs.VisitAll(func(f *pflag.Flag) {
		if v := reflect.ValueOf(f.Value); v.Kind() == reflect.Pointer {
			if path, ok := fields[v.Pointer()]; ok {
				out[f] = path
			}
		}
	})
	return out
}

// A default lives once, in the library: every flag bound to a Config
// field starts as the library's DefaultConfig value for that field, and
// no help text types a default value of its own (pflag prints the bound
// one). A flag whose default is retyped in cmd, and later drifts, fails
// here.
func TestFlagDefaultsComeFromLibraries(t *testing.T) {
	typedDefault := regexp.MustCompile(`default:? [0-9]`)
	for _, b := range flagBindings() {
		t.Run(b.name, func(t *testing.T) {
			bound := boundFields(b)
			if len(bound) < b.min {
				t.Fatalf("%d flags bind a Config field, want at least %d: the walk no longer finds them", len(bound), b.min)
			}
			for f, path := range bound {
				got := fieldByPath(reflect.ValueOf(b.cfg).Elem(), path).Interface()
				want := fieldByPath(reflect.ValueOf(b.defaults), path).Interface()
				if !reflect.DeepEqual(got, want) {
					t.Errorf("--%s binds %s with default %v; DefaultConfig().%s is %v: bind the flag from DefaultConfig", f.Name, path, got, path, want)
				}
				if typedDefault.MatchString(f.Usage) {
					t.Errorf("--%s's help types a default (%q); let pflag print DefaultConfig's", f.Name, f.Usage)
				}
			}
		})
	}
}

// The one table from config fields to flags (configFlags) agrees with the
// flags as bound: an error naming a field is printed with the flag that
// sets it.
func TestConfigFlagsMatchTheBindings(t *testing.T) {
	for _, b := range flagBindings() {
		for f, path := range boundFields(b) {
			if got, want := configFlags[path], "--"+f.Name; got != want {
				t.Errorf("%s: configFlags[%q] = %q, want %q (the flag bound to it)", b.name, path, got, want)
			}
		}
	}
}

// A library's configuration error names a field; the CLI prints the flag.
func TestConfigErrorsPrintTheFlag(t *testing.T) {
	_, err := master.New(t.Context(), master.Config{ID: "m1", DataDir: t.TempDir(), Listen: "127.0.0.1:0",
		InitialCluster: []master.Member{{ID: "m1", Addr: "127.0.0.1:7001"}}, Tracker: master.TrackerConfig{Interval: 10 * 60e9, PeerLifetime: 60e9}})
	var ce *master.ConfigError
	if !errors.As(err, &ce) || ce.Field != "Tracker.PeerLifetime" || !errors.Is(err, master.ErrConfig) {
		t.Fatalf("got %v, want a ConfigError for Tracker.PeerLifetime wrapping ErrConfig", err)
	}
	if strings.Contains(err.Error(), "--") {
		t.Errorf("the library's error names a flag: %q", err)
	}
	msg := errorMessage(err)
	for _, want := range []string{"--tracker-peer-lifetime 1m0s must exceed --tracker-interval 10m0s", "invalid master configuration"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the CLI prints %q, want it to contain %q", msg, want)
		}
	}
}

// Flags bound to a variable of the command rather than a Config field take
// their defaults from the library too.
func TestIndirectFlagDefaultsComeFromLibraries(t *testing.T) {
	jd := jepsenlike.DefaultConfig()
	for _, tc := range []struct {
		fs         *pflag.FlagSet
		name, want string
	}{
		{newMasterCmd(&globalFlags{}, io.Discard).Flags(), "shutdown-timeout", master.DefaultShutdownTimeout.String()},
		{newJepsenCmd(&globalFlags{}, io.Discard, io.Discard).Flags(), "net", string(jd.Net)},
		{newJepsenCmd(&globalFlags{}, io.Discard, io.Discard).Flags(), "workload", string(jd.Workloads[0])},
	} {
		if f := tc.fs.Lookup(tc.name); f == nil || f.DefValue != tc.want {
			t.Errorf("--%s: got %+v, want default %q", tc.name, f, tc.want)
		}
	}
}
