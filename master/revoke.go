package master

import (
	"context"
	"crypto/x509"
	"fmt"
	"math/big"
	"strings"

	"fileshare/client"
	"fileshare/fsm"
	"fileshare/transport"
)

// The deny list's RPCs. An admin (or a member master) revokes a
// certificate by its serial number; the leader commits the change, and
// every master then refuses the certificate at the TLS handshake and
// closes the connections that presented it (trust.go).
const (
	MethodRevoke      = "Cluster.Revoke"
	MethodRevocations = "Cluster.Revocations"
)

// RevokeRequest adds serials to the deny list, or with Unrevoke removes
// them. Serials are hex, as NormalizeSerial accepts them.
type RevokeRequest struct {
	Serials   []string
	Unrevoke  bool `codec:",omitempty"`
	Forwarded bool `codec:",omitempty"`
}

// RevocationsRequest asks for the deny list.
type RevocationsRequest struct {
	client.ReadHeader
}

// Revocation is one entry of the deny list.
type Revocation struct {
	Serial string // lower-case hex
	Time   int64  // when it was revoked, Unix nanoseconds (the leader's clock)
}

// RevokeReply is the deny list after the change (or as read).
type RevokeReply struct {
	Index   uint64 // the log index of the change, or of the read
	Revoked []Revocation
}

// NormalizeSerial turns a serial number as tools print it ("0A:1B:2C",
// "0x0a1b2c", "A1B2C") into the deny list's form: lower-case hex without
// leading zeros.
func NormalizeSerial(s string) (string, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimPrefix(t, "0x")
	t = strings.NewReplacer(":", "", " ", "").Replace(t)
	n, ok := new(big.Int).SetString(t, 16)
	if !ok || t == "" || n.Sign() < 0 {
		return "", fmt.Errorf("%w: serial %.60q is not a hex number (give it as 'openssl x509 -serial' prints it, or pass the certificate file)", fsm.ErrInvalid, s)
	}
	out := n.Text(16)
	if err := fsm.ValidSerial(out); err != nil {
		return "", err
	}
	return out, nil
}

func (m *Master) handleRevoke(ctx context.Context, req *RevokeRequest) (*RevokeReply, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	serials := make([]string, len(req.Serials))
	for i, s := range req.Serials {
		var err error
		if serials[i], err = NormalizeSerial(s); err != nil {
			return nil, err
		}
	}
	var cmd fsm.Command
	if req.Unrevoke {
		cmd = fsm.UnrevokeCerts{Serials: serials}
	} else {
		if own := m.ownSerial(); own != "" {
			for _, s := range serials {
				if s == own {
					return nil, fmt.Errorf("%w: serial %s is the certificate of master %s, which answers this request; remove the master from the cluster (fileshare cluster remove) before revoking its certificate, or ask another master", fsm.ErrInvalid, s, m.cfg.ID)
				}
			}
		}
		cmd = fsm.RevokeCerts{Serials: serials, Time: m.clock.next()}
	}
	data, err := fsm.Encode(cmd)
	if err != nil {
		return nil, err
	}
	return route(m, ctx, MethodRevoke, req, &req.Forwarded, func(ctx context.Context) (*RevokeReply, error) {
		resp, idx, err := m.batcher.submit(ctx, data)
		if err != nil {
			return nil, err
		}
		if resp.Err != nil {
			return nil, resp.Err
		}
		m.logger.Warn("deny list changed", "unrevoke", req.Unrevoke, "serials", serials, "by", transport.CallerFrom(ctx).Name)
		return &RevokeReply{Index: idx, Revoked: m.revocations()}, nil
	})
}

func (m *Master) handleRevocations(ctx context.Context, req *RevocationsRequest) (*RevokeReply, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	return routeRead(m, ctx, MethodRevocations, req, &req.ReadHeader, func() (*RevokeReply, error) {
		return &RevokeReply{Index: m.fsm.AppliedIndex(), Revoked: m.revocations()}, nil
	})
}

func (m *Master) revocations() []Revocation {
	rs := m.fsm.Revocations()
	out := make([]Revocation, len(rs))
	for i, r := range rs {
		out[i] = Revocation{Serial: r.Serial, Time: r.Time}
	}
	return out
}

// ownSerial returns the serial of this master's certificate, "" without
// one.
func (m *Master) ownSerial() string {
	if !m.cfg.TLS.HasCertificate() {
		return ""
	}
	c, err := m.cfg.TLS.Certificate()
	if err != nil || len(c.Certificate) == 0 {
		return ""
	}
	leaf := c.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return ""
		}
	}
	return transport.SerialOf(leaf)
}
