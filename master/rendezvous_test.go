package master

import (
	"testing"

	"fileshare/client"
	"fileshare/transport"
)

// Whatever bytes arrive as a rendezvous request, decoding and validation
// never panic, and a message that passes validation is within its limits.
func FuzzRendezvousRequests(f *testing.F) {
	good, _ := transport.Marshal(&client.ConnectRequest{PeerID: "p", Target: "q", Message: client.RendezvousMessage{From: "p", Kind: client.ConnReverse, Addr: "203.0.113.9:7000", Token: make([]byte, 16)}})
	wait, _ := transport.Marshal(&client.WaitRequest{PeerID: "p", NAT: client.PeerNAT{Addr: "203.0.113.9:7000", UDP: "203.0.113.9:7001"}})
	f.Add(good)
	f.Add(wait)
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		var c client.ConnectRequest
		if transport.Unmarshal(b, &c) == nil && validMessage(&c) == nil {
			if len(c.Message.Token) > client.RendezvousToken || len(c.Message.Addr) > client.MaxRendezvousAddr || c.Message.From != c.PeerID {
				t.Fatalf("accepted %+v", c)
			}
		}
		var w client.WaitRequest
		if transport.Unmarshal(b, &w) == nil {
			_ = validNAT(w.NAT)
		}
		var o client.ObserveRequest
		_ = transport.Unmarshal(b, &o)
	})
}
