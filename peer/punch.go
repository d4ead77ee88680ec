package peer

import (
	"context"
	"errors"
	"net"

	"fileshare/client"
)

// errNoPunch means hole punching is not available on this peer.
var errNoPunch = errors.New("hole punching is not available")

// punchAddr returns this peer's UDP address as a master observed it, or "".
func (p *Peer) punchAddr() string { return "" }

func (p *Peer) dialPunched(ctx context.Context, id string) (net.Conn, error) { return nil, errNoPunch }

func (p *Peer) servePunched(m client.RendezvousMessage) error { return errNoPunch }
