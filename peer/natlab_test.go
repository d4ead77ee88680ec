//go:build linux

package peer

// The NAT lab: real masters and peers, each its own process, in network
// namespaces where homes sit behind routers doing Linux NAT (netlab.NewNAT).
// The test binary re-executes itself in each namespace as a master or a
// peer (TestHelperNATLab, driven by natLabEnv); the outer test reads their
// stdout, SIGKILLs them by PID and compares downloaded files byte for byte
// with the originals (namespaces share the file system).

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"fileshare/client"
	"fileshare/internal/netlab"
	"fileshare/internal/poll"
	"fileshare/master"
	"fileshare/transport"
)

const natLabEnv = "FILESHARE_NATLAB_ROLE"

// labRole is what one re-executed process is to do.
type labRole struct {
	Master bool `json:"master,omitempty"`
	// A master's settings.
	ID      string          `json:"id,omitempty"`
	Members []master.Member `json:"members,omitempty"`
	TLSDir  string          `json:"tls_dir"`
	// A master's or a peer's.
	Listen  string `json:"listen,omitempty"`
	DataDir string `json:"data_dir"`
	// A peer's settings.
	Masters  []string `json:"masters,omitempty"`
	Share    string   `json:"share,omitempty"`
	Relay    bool     `json:"relay,omitempty"`
	Download string   `json:"download,omitempty"` // a file ID to fetch, then exit
	Dest     string   `json:"dest,omitempty"`
	Rate     int64    `json:"rate,omitempty"` // download rate limit, bytes/s
	// HolderAddr, if set, is the address the downloader waits to see the
	// index list for a holder before it starts.
	HolderAddr string `json:"holder_addr,omitempty"`
	// A relay peer's plaintext probe: the original file, and where to
	// write "RELAYED HITS" after every chunk relayed.
	TapData string `json:"tap_data,omitempty"`
	TapOut  string `json:"tap_out,omitempty"`
}

func requireNATLab(t *testing.T) {
	t.Helper()
	if err := netlab.NATAvailable(); err != nil {
		if os.Getenv("FILESHARE_REQUIRE_ROOT_TESTS") == "1" {
			t.Fatal(err.Error() + "; failing because FILESHARE_REQUIRE_ROOT_TESTS=1")
		}
		t.Skip(err.Error() + "; set FILESHARE_REQUIRE_ROOT_TESTS=1 to make this a failure")
	}
	if testing.Short() {
		t.Skip("runs masters and peers in network namespaces; skipped with -short")
	}
}

// natRig is one lab with three masters running in its public hub.
type natRig struct {
	t       *testing.T
	lab     *netlab.NATLab
	dir     string
	masters []string // cluster addresses, in member order
	mu      sync.Mutex
	procs   map[string]*labProc // by name
	logs    []string
}

// labProc is a process of the rig and the lines it printed on stdout.
type labProc struct {
	name  string
	cmd   *exec.Cmd
	lines chan string
	done  chan struct{}
}

func newNATRig(t *testing.T, cfg netlab.NATConfig) *natRig {
	t.Helper()
	requireNATLab(t)
	cfg.PublicAddrs = 3
	lab, err := netlab.NewNAT(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := &natRig{t: t, lab: lab, dir: t.TempDir(), procs: map[string]*labProc{}}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("FILESHARE_NATLAB_LOGS") == "1" {
			r.dumpLogs()
		}
		if err := lab.Close(); err != nil {
			t.Errorf("delete the lab: %v", err)
		}
	})
	var ids, hosts []string
	var members []master.Member
	for i, a := range lab.Public.HubAddrs {
		id := fmt.Sprintf("m%d", i)
		ids, hosts = append(ids, id), append(hosts, a.String())
		addr := a.String() + ":7000"
		r.masters = append(r.masters, addr)
		members = append(members, master.Member{ID: id, Addr: addr})
	}
	tlsDir := filepath.Join(r.dir, "tls")
	if _, err := transport.InitFiles(tlsDir, ids, hosts, time.Hour); err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		r.start(lab.Public.Hub, id, labRole{Master: true, ID: id, Members: members, TLSDir: tlsDir, Listen: r.masters[i], DataDir: filepath.Join(r.dir, id)})
	}
	for _, id := range ids {
		r.expect(id, "ready", 30*time.Second)
	}
	return r
}

// start runs the role in ns as process name.
func (r *natRig) start(ns netlab.NS, name string, role labRole) *labProc {
	t := r.t
	t.Helper()
	raw, err := json.Marshal(role)
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(r.dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := ns.Command(context.Background(), os.Args[0], "-test.run=^TestHelperNATLab$", "-test.timeout=10m")
	cmd.Env = append(os.Environ(), natLabEnv+"="+string(raw))
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s in %s: %v", name, ns.Name, err)
	}
	p := &labProc{name: name, cmd: cmd, lines: make(chan string, 1024), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			default: // nobody reads progress lines this fast; drop them
			}
		}
		cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	r.mu.Lock()
	r.procs[name] = p
	r.logs = append(r.logs, logPath)
	r.mu.Unlock()
	return p
}

// expect waits for a line of process name that begins with prefix and
// returns the rest of it.
func (r *natRig) expect(name, prefix string, timeout time.Duration) string {
	r.t.Helper()
	r.mu.Lock()
	p := r.procs[name]
	r.mu.Unlock()
	deadline := time.After(timeout)
	for {
		select {
		case l := <-p.lines:
			if rest, ok := strings.CutPrefix(l, prefix); ok {
				return strings.TrimSpace(rest)
			}
		case <-p.done:
			// Drain what it printed before it exited.
			for {
				select {
				case l := <-p.lines:
					if rest, ok := strings.CutPrefix(l, prefix); ok {
						return strings.TrimSpace(rest)
					}
					continue
				default:
				}
				break
			}
			r.t.Fatalf("%s exited (%v) before printing %q", name, p.cmd.ProcessState, prefix)
		case <-deadline:
			r.t.Fatalf("%s printed no %q line within %v", name, prefix, timeout)
		}
	}
}

// kill SIGKILLs process name by PID and waits until it is gone.
func (r *natRig) kill(name string) {
	r.mu.Lock()
	p := r.procs[name]
	r.mu.Unlock()
	_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

func (r *natRig) dumpLogs() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, path := range r.logs {
		b, _ := os.ReadFile(path)
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		r.t.Logf("--- last lines of %s:\n%s", filepath.Base(path), strings.Join(lines[max(0, len(lines)-40):], "\n"))
	}
}

// peerRole returns the role of the test peer called name (its key is
// testKey(name), so its ID is pid(name)) listening in ns.
func (r *natRig) peerRole(t *testing.T, ns netlab.NS, name, share string) labRole {
	t.Helper()
	dataDir := filepath.Join(r.dir, name)
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	b, err := encodeKey(testKey(name))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataDir, keyFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return labRole{TLSDir: filepath.Join(r.dir, "tls"), Masters: r.masters, DataDir: dataDir, Share: share, Listen: ns.Addr.String() + ":7100"}
}

// holder starts peer name in ns sharing data as f.bin and returns the
// file's ID.
func (r *natRig) holder(t *testing.T, ns netlab.NS, name string, data []byte, tweak func(*labRole)) string {
	t.Helper()
	role := r.peerRole(t, ns, name, shareFolder(t, map[string][]byte{"f.bin": data}))
	if tweak != nil {
		tweak(&role)
	}
	r.start(ns, name, role)
	r.expect(name, "ready", 30*time.Second)
	return idOf(t, data)
}

// download starts peer name in ns fetching id; listen makes it a
// listening (sharing) peer, else it only downloads. It returns the
// process; fetched reads its result.
func (r *natRig) download(t *testing.T, ns netlab.NS, name, id string, listen bool, tweak func(*labRole)) (*labProc, string) {
	t.Helper()
	share := ""
	if listen {
		share = t.TempDir()
	}
	role := r.peerRole(t, ns, name, share)
	role.Download, role.Dest = id, filepath.Join(t.TempDir(), "f.bin")
	if tweak != nil {
		tweak(&role)
	}
	return r.start(ns, name, role), role.Dest
}

// fetched waits for downloader name's result and checks the file against
// data byte for byte.
func (r *natRig) fetched(t *testing.T, name, dest string, data []byte) DownloadResult {
	t.Helper()
	raw := r.expect(name, "result", 90*time.Second)
	var res DownloadResult
	if err := json.Unmarshal([]byte(raw), &res); err != nil {
		t.Fatalf("bad result line %q: %v", raw, err)
	}
	got, err := os.ReadFile(dest)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(data) || len(got) != len(data) {
		t.Fatalf("%s downloaded %d bytes that differ from the %d of the original", name, len(got), len(data))
	}
	return res
}

func wantPath(t *testing.T, res DownloadResult, holder, want string) {
	t.Helper()
	t.Logf("downloaded %d pieces in %v; paths %v", res.Pieces, res.Duration, res.Paths)
	if got := res.Paths[pid(holder)]; got != want {
		t.Fatalf("holder %s was reached by %q, want %q (all paths: %v)", holder, got, want, res.Paths)
	}
}

// Lab case 1: a holder on the public network, a download-only peer
// behind a NAT: the downloader dials out, directly.
func TestNATLabPublicHolderHomeDownloader(t *testing.T) {
	r := newNATRig(t, netlab.NATConfig{Public: 1, Homes: []netlab.NATKind{netlab.PortPreserving}})
	data := randomBytes(31, 3*mib+101)
	id := r.holder(t, r.lab.Public.Hosts[0], "holder", data, nil)
	_, dest := r.download(t, r.lab.Homes[0].Host, "dl", id, false, nil)
	wantPath(t, r.fetched(t, "dl", dest, data), "holder", PathDirect)
}

// Lab case 2: a holder behind a NAT, a reachable downloader on the public
// network: the holder cannot be dialled, so the masters ask it to dial
// the downloader (reversal).
func TestNATLabHomeHolderPublicDownloaderReverses(t *testing.T) {
	r := newNATRig(t, netlab.NATConfig{Public: 1, Homes: []netlab.NATKind{netlab.PortPreserving}})
	data := randomBytes(32, 3*mib+202)
	id := r.holder(t, r.lab.Homes[0].Host, "holder", data, nil)
	_, dest := r.download(t, r.lab.Public.Hosts[0], "dl", id, true, nil)
	wantPath(t, r.fetched(t, "dl", dest, data), "holder", PathReversal)
}

// Lab case 3: both behind port-preserving NATs: the masters coordinate a
// hole punch, and the bytes flow peer to peer over QUIC, through no relay.
func TestNATLabBothBehindPortPreservingNATsPunch(t *testing.T) {
	r := newNATRig(t, netlab.NATConfig{Homes: []netlab.NATKind{netlab.PortPreserving, netlab.PortPreserving}})
	data := randomBytes(33, 3*mib+303)
	id := r.holder(t, r.lab.Homes[0].Host, "holder", data, nil)
	_, dest := r.download(t, r.lab.Homes[1].Host, "dl", id, false, nil)
	wantPath(t, r.fetched(t, "dl", dest, data), "holder", PathPunch)
}

// Lab case 4: both behind port-randomising NATs (symmetric): the punch
// cannot work, so the bytes go through a relay peer on the public
// network, end to end encrypted: the relay carries the whole file and
// never a sample of it in the clear.
func TestNATLabBothBehindPortRandomNATsRelay(t *testing.T) {
	r := newNATRig(t, netlab.NATConfig{Public: 1, Homes: []netlab.NATKind{netlab.PortRandom, netlab.PortRandom}})
	data := randomBytes(34, 3*mib+404)
	orig := filepath.Join(r.dir, "original")
	if err := os.WriteFile(orig, data, 0o600); err != nil {
		t.Fatal(err)
	}
	tapOut := filepath.Join(r.dir, "relay-tap")
	relayRole := r.peerRole(t, r.lab.Public.Hosts[0], "relay", t.TempDir())
	relayRole.Relay, relayRole.TapData, relayRole.TapOut = true, orig, tapOut
	r.start(r.lab.Public.Hosts[0], "relay", relayRole)
	r.expect("relay", "ready", 30*time.Second)
	id := r.holder(t, r.lab.Homes[0].Host, "holder", data, nil)
	_, dest := r.download(t, r.lab.Homes[1].Host, "dl", id, false, nil)
	wantPath(t, r.fetched(t, "dl", dest, data), "holder", PathRelay)
	raw, err := os.ReadFile(tapOut)
	if err != nil {
		t.Fatalf("the relay peer relayed nothing: %v", err)
	}
	var relayed, hits int
	if _, err := fmt.Sscan(string(raw), &relayed, &hits); err != nil || relayed < len(data) || hits != 0 {
		t.Fatalf("the relay carried %d bytes with %d samples of the file in the clear (%v); want at least %d and none", relayed, hits, err, len(data))
	}
}

// Lab case 5: the leader is SIGKILLed in the middle of a punched
// download; the piece stream does not need it, and the lookups and
// rendezvous the download still makes go to the masters that remain.
func TestNATLabPunchedDownloadSurvivesLeaderKill(t *testing.T) {
	r := newNATRig(t, netlab.NATConfig{Homes: []netlab.NATKind{netlab.PortPreserving, netlab.PortPreserving}})
	data := randomBytes(35, 8*mib+505)
	id := r.holder(t, r.lab.Homes[0].Host, "holder", data, nil)
	_, dest := r.download(t, r.lab.Homes[1].Host, "dl", id, false, func(l *labRole) { l.Rate = 2 << 20 })
	leader := r.expect("dl", "leader", 60*time.Second)
	r.expect("dl", "progress", 60*time.Second)
	r.kill(leader)
	wantPath(t, r.fetched(t, "dl", dest, data), "holder", PathPunch)
}

// A holder behind a NAT that forwards its port (by hand, or UPnP) is
// reachable at its router's address: a master's dial-back finds it there,
// the peer advertises that address instead of its private one, and a
// downloader in another home dials it directly.
func TestNATLabForwardedPortIsAdvertisedAndDialledDirectly(t *testing.T) {
	r := newNATRig(t, netlab.NATConfig{Homes: []netlab.NATKind{netlab.PortPreserving, netlab.PortPreserving}})
	if err := r.lab.ForwardPort(t.Context(), 0, "tcp", 7100); err != nil {
		t.Fatal(err)
	}
	data := randomBytes(37, 2*mib+707)
	id := r.holder(t, r.lab.Homes[0].Host, "holder", data, nil)
	public := r.lab.Homes[0].Router.Addr.String() + ":7100"
	_, dest := r.download(t, r.lab.Homes[1].Host, "dl", id, false, func(l *labRole) { l.HolderAddr = public })
	wantPath(t, r.fetched(t, "dl", dest, data), "holder", PathDirect)
}

// Lab case 6: the holder's NAT forgets its mappings in the middle of a
// download (its conntrack table flushed, as when mappings time out or the
// router reboots): the download recovers and completes.
func TestNATLabMappingExpiryMidDownloadRecovers(t *testing.T) {
	r := newNATRig(t, netlab.NATConfig{Public: 1, Homes: []netlab.NATKind{netlab.PortRandom}})
	if _, err := exec.LookPath("conntrack"); err != nil {
		t.Skip("needs conntrack(8) (apt-get install conntrack)")
	}
	data := randomBytes(36, 8*mib+606)
	id := r.holder(t, r.lab.Homes[0].Host, "holder", data, nil)
	_, dest := r.download(t, r.lab.Public.Hosts[0], "dl", id, true, func(l *labRole) { l.Rate = 2 << 20 })
	r.expect("dl", "progress", 60*time.Second)
	if err := r.lab.FlushMappings(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
	res := r.fetched(t, "dl", dest, data)
	wantPath(t, res, "holder", PathReversal)
}

// TestHelperNATLab is not a test: re-executed inside a lab namespace with
// natLabEnv set, it runs a master or a peer until it is killed (a
// downloading peer exits after printing its result).
func TestHelperNATLab(t *testing.T) {
	raw := os.Getenv(natLabEnv)
	if raw == "" {
		t.Skip("a helper process of the NAT lab tests")
	}
	var role labRole
	if err := json.Unmarshal([]byte(raw), &role); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if role.Master {
		creds, err := transport.LoadTLS(filepath.Join(role.TLSDir, role.ID+".pem"), filepath.Join(role.TLSDir, role.ID+"-key.pem"), filepath.Join(role.TLSDir, "ca.pem"))
		if err != nil {
			t.Fatal(err)
		}
		m, err := master.New(context.Background(), master.Config{ID: role.ID, DataDir: role.DataDir, Listen: role.Listen, InitialCluster: role.Members, TLS: creds, Logger: log.With("master", role.ID)})
		if err != nil {
			t.Fatal(err)
		}
		_ = m
		fmt.Println("ready")
		select {}
	}
	ca, err := transport.LoadTLS("", "", filepath.Join(role.TLSDir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Masters: role.Masters, DataDir: role.DataDir, ShareDir: role.Share, Listen: role.Listen, CA: ca,
		RescanInterval: 200 * time.Millisecond, IOTimeout: 5 * time.Second, MasterTimeout: 2 * time.Second, NATInterval: 5 * time.Second,
		Relay: role.Relay, Logger: log}
	if role.TapData != "" {
		data, err := os.ReadFile(role.TapData)
		if err != nil {
			t.Fatal(err)
		}
		probe := newPlaintextProbe(data)
		cfg.relayTap = func(b []byte) {
			probe.tap(b)
			probe.mu.Lock()
			line := fmt.Sprintf("%d %d", probe.relayed, probe.hits)
			probe.mu.Unlock()
			_ = os.WriteFile(role.TapOut, []byte(line), 0o600)
		}
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if role.Share != "" {
		if err := p.Rescan(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Println("ready")
	if role.Download == "" {
		select {}
	}
	ctx := t.Context()
	poll.Until(t, 60*time.Second, "a holder of the file", func() bool {
		r, err := p.Client().Lookup(ctx, role.Download, client.ReadLinearizable)
		if err != nil || len(r.Holders) == 0 {
			return false
		}
		return role.HolderAddr == "" || r.Holders[0].Addr == role.HolderAddr
	})
	if p.mux != nil {
		poll.Until(t, 30*time.Second, "a reachability answer", func() bool { _, known := p.Reachable(); return known })
	}
	if sts, _ := p.Client().ClusterStatus(ctx); len(sts) > 0 {
		for _, st := range sts {
			if st.State == "Leader" {
				fmt.Println("leader", st.ID)
			}
		}
	}
	res, err := p.Download(ctx, role.Download, role.Dest, DownloadOptions{RateLimit: role.Rate, ProgressInterval: 200 * time.Millisecond,
		Progress: func(pr Progress) {
			if pr.Done > 0 {
				fmt.Println("progress", pr.Done, pr.Paths)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(res)
	fmt.Println("result", string(b))
	p.Close()
}
