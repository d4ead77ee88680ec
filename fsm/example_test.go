package fsm_test

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"

	"fileshare/fsm"

	"github.com/hashicorp/raft"
)

// A master encodes a peer's requests as commands; raft commits them and
// calls Apply on every master; any master can then answer lookups.
func ExampleFSM() {
	f := fsm.New()
	token := fsm.Token(sha256.Sum256([]byte("alice's secret")))
	id := fsm.FileID("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")

	join, _ := fsm.Encode(fsm.JoinPeer{Peer: "alice", Token: token, Addr: "10.0.0.1:7000", RequestID: 1, Time: 1700000000e9})
	reg, _ := fsm.Encode(fsm.RegisterFiles{Peer: "alice", Token: token, RequestID: 2, Files: []fsm.FileMeta{
		{ID: id, Name: "Talk.mp4", Size: 5 << 20, PieceSize: 1 << 18},
	}})

	// raft.Raft calls Apply (or ApplyBatch) with committed entries; the
	// value returned is what ApplyFuture.Response() yields.
	for i, data := range [][]byte{join, reg} {
		resp := f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: data}).(fsm.Response)
		fmt.Println("applied", i+1, "err:", resp.Err)
	}

	// A retry of request 2 (say, after a timeout) changes nothing.
	resp := f.Apply(&raft.Log{Index: 3, Type: raft.LogCommand, Data: reg}).(fsm.Response)
	fmt.Println("retry duplicate:", resp.Duplicate)

	info, holders, ok := f.Lookup(id)
	fmt.Println(ok, info.Name, info.Size, info.Holders)
	for _, h := range holders {
		fmt.Println(h.Peer, h.Addr, h.Name)
	}
	fmt.Println(f.Search("talk", 10)[0].ID == id)

	// Output:
	// applied 1 err: <nil>
	// applied 2 err: <nil>
	// retry duplicate: true
	// true Talk.mp4 5242880 1
	// alice 10.0.0.1:7000 Talk.mp4
	// true
}

// Errors are sentinels: test them with errors.Is.
func ExampleResponse() {
	f := fsm.New()
	data, _ := fsm.Encode(fsm.LeavePeer{Peer: "nobody", Token: fsm.Token{1}, RequestID: 7})
	resp := f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: data}).(fsm.Response)
	fmt.Println(errors.Is(resp.Err, fsm.ErrUnknownPeer))

	_, err := fsm.Encode(fsm.JoinPeer{Peer: "bad peer id", Token: fsm.Token{1}, Addr: "h:1", RequestID: 1})
	fmt.Println(errors.Is(err, fsm.ErrInvalid))

	// Output:
	// true
	// true
}

// A leader's batcher packs several encoded commands into one log entry and
// gets one result per command.
func ExampleBatch() {
	f := fsm.New()
	a, _ := fsm.Encode(fsm.JoinPeer{Peer: "a", Token: fsm.Token{1}, Addr: "h:1", RequestID: 1})
	b, _ := fsm.Encode(fsm.JoinPeer{Peer: "a", Token: fsm.Token{2}, Addr: "h:1", RequestID: 2})
	batch, _ := fsm.Encode(fsm.Batch{Commands: [][]byte{a, b}})
	resp := f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: batch}).(fsm.Response)
	for _, r := range resp.Results {
		fmt.Println(r.Err)
	}
	// Output:
	// <nil>
	// unauthorized: peer a joined with another key; only the holder of a peer's key may change its registrations
}

// A master turns a BitTorrent announce that changes the swarm into an
// Announce command, and answers from its local FSM; a re-announce that
// changes nothing only touches the soft lease.
func ExampleFSM_SwarmPeers() {
	f := fsm.New()
	ih := fsm.InfoHash{0xab}
	index := uint64(0)
	announce := func(peer byte, addr string, seeder bool) {
		index++
		data, _ := fsm.Encode(fsm.Announce{
			InfoHash: ih, Peer: fsm.SwarmPeerID{peer}, IP: netip.MustParseAddr(addr).As16(),
			Port: 6881, Seeder: seeder, Time: 1700000000e9,
		})
		f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data})
	}
	announce(1, "192.0.2.1", true)
	announce(2, "192.0.2.2", false)
	announce(3, "2001:db8::3", false)

	fmt.Println(f.TouchSwarmPeer(ih, fsm.SwarmPeerID{2}, netip.MustParseAddr("192.0.2.2").As16(), 1700000060e9))
	// A seeder gets the leechers first; rnd comes from the caller.
	peers, complete, incomplete := f.SwarmPeers(ih, fsm.SwarmPeerID{1}, 10, true, 42)
	fmt.Println(complete, incomplete, len(peers))
	for _, p := range peers {
		fmt.Println(netip.AddrFrom16(p.IP).Unmap(), p.Seeder)
	}
	_, _, downloaded := f.Scrape(ih)
	fmt.Println("downloaded", downloaded)
	// Unordered output:
	// true
	// 1 2 2
	// 192.0.2.2 false
	// 2001:db8::3 false
	// downloaded 0
}
