package master

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"

	"fileshare/transport"
)

// encodeRPC writes one RPC as raft's NetworkTransport sends it.
func encodeRPC(t *testing.T, w *bytes.Buffer, typ byte, args any) {
	t.Helper()
	w.WriteByte(typ)
	bw := bufio.NewWriter(w)
	if err := codec.NewEncoder(bw, &codec.MsgpackHandle{BasicHandle: codec.BasicHandle{TimeNotBuiltin: true}}).Encode(args); err != nil {
		t.Fatal(err)
	}
	bw.Flush()
}

// The stream reader follows every kind of Raft RPC, fed in chunks of any
// size, and sees each RPC's header once, as sent.
func TestRPCReaderFollowsRaftTraffic(t *testing.T) {
	hdr := raft.RPCHeader{ProtocolVersion: 3, ID: []byte("m1"), Addr: []byte("127.0.0.1:7001")}
	var stream bytes.Buffer
	big := bytes.Repeat([]byte("x"), 70000)
	encodeRPC(t, &stream, 0, &raft.AppendEntriesRequest{RPCHeader: hdr, Term: 5, LeaderCommitIndex: 1 << 40, Entries: []*raft.Log{
		{Index: 1, Term: 1, Type: raft.LogCommand, Data: big, AppendedAt: time.Now(), Extensions: []byte("e")},
		{Index: 2, Term: 5, Type: raft.LogConfiguration, Data: []byte{0xc1, 0xd9, 0xff}},
	}})
	encodeRPC(t, &stream, 0, &raft.AppendEntriesRequest{RPCHeader: hdr, Term: 5}) // a heartbeat
	encodeRPC(t, &stream, 1, &raft.RequestVoteRequest{RPCHeader: hdr, Term: 6, LastLogIndex: 1<<63 - 1, LeadershipTransfer: true})
	encodeRPC(t, &stream, 4, &raft.RequestPreVoteRequest{RPCHeader: hdr, Term: 7})
	snap := bytes.Repeat([]byte{0xc1}, 100000) // not msgpack: must pass as raw bytes
	encodeRPC(t, &stream, rpcInstallSnapshot, &raft.InstallSnapshotRequest{RPCHeader: hdr, SnapshotVersion: 1, Term: 7, LastLogIndex: 9, Size: int64(len(snap)), Peers: []byte("p"), Configuration: []byte("c")})
	stream.Write(snap)
	encodeRPC(t, &stream, 3, &raft.TimeoutNowRequest{RPCHeader: hdr})
	const rpcs = 6

	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 1))
			var seen []string
			p := newRPCReader(func(id, addr string) error {
				seen = append(seen, id+"@"+addr)
				return nil
			})
			b := stream.Bytes()
			for len(b) > 0 {
				n := min(len(b), 1+rng.IntN(9000))
				if seed == 0 {
					n = 1 // byte by byte
				}
				if err := p.feed(b[:n]); err != nil {
					t.Fatalf("feed: %v", err)
				}
				b = b[n:]
			}
			if len(seen) != rpcs {
				t.Fatalf("saw %d headers, want %d: %v", len(seen), rpcs, seen)
			}
			for _, s := range seen {
				if s != "m1@127.0.0.1:7001" {
					t.Fatalf("saw header %q, want m1@127.0.0.1:7001", s)
				}
			}
			if !p.expectType || p.raw != 0 || len(p.stack) != 0 {
				t.Fatal("the reader did not end between two RPCs")
			}
		})
	}
}

// An RPC whose header claims another identity fails the read that
// completes it, before raft can decode it.
func TestRPCReaderRefusesAnotherIdentity(t *testing.T) {
	var stream bytes.Buffer
	encodeRPC(t, &stream, 0, &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("m1"), Addr: []byte("a:1")}, Term: 5})
	good := stream.Len()
	encodeRPC(t, &stream, 0, &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("m3"), Addr: []byte("a:1")}, Term: 99})
	m := &Master{gate: newTrustGate(nil)}
	m.logger = discardLogger()
	p := newRPCReader(func(id, addr string) error { return m.checkRaftHeader(callerNamed("m1"), id, addr) })
	if err := p.feed(stream.Bytes()[:good]); err != nil {
		t.Fatalf("m1's own RPC: %v", err)
	}
	rest := stream.Bytes()[good:]
	if err := p.feed(rest[:len(rest)-1]); err != nil {
		t.Fatalf("an incomplete RPC was judged early: %v", err)
	}
	if err := p.feed(rest[len(rest)-1:]); !errors.Is(err, errRaftHeader) {
		t.Fatalf("an RPC claiming m3 on m1's stream: got %v, want errRaftHeader", err)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func callerNamed(name string) transport.Caller {
	return transport.Caller{Role: transport.RoleMaster, Name: name}
}
