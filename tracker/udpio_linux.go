//go:build linux

package tracker

import (
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsgIO reads and writes batches with recvmmsg(2) and sendmmsg(2) on a
// non-blocking socket, waiting in Go's poller (syscall.RawConn) when there
// is nothing to read, so a read deadline still wakes it. Its scratch space
// is allocated once; a batch allocates nothing.
//
// It calls the system calls itself instead of through golang.org/x/net's
// ipv4.PacketConn.ReadBatch, which does the same but allocates a
// *net.UDPAddr and its IP for every datagram it returns.
type mmsgIO struct {
	rc    syscall.RawConn
	v6    bool // the socket is AF_INET6 (dual-stack or not)
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6

	// Arguments and results of the call in progress.
	count, n int
	errno    syscall.Errno
	readFn   func(fd uintptr) bool
	writeFn  func(fd uintptr) bool
}

// mmsghdr is struct mmsghdr: Go pads it to the alignment of Msghdr as C
// does on every Linux architecture.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

func newBatchIO(pc net.PacketConn) batchIO {
	udp, ok := pc.(*net.UDPConn)
	if !ok {
		return &genericIO{pc: pc}
	}
	rc, err := udp.SyscallConn()
	if err != nil {
		return &genericIO{pc: pc, udp: udp}
	}
	m := &mmsgIO{
		rc:    rc,
		hdrs:  make([]mmsghdr, udpBatch),
		iovs:  make([]unix.Iovec, udpBatch),
		names: make([]unix.RawSockaddrInet6, udpBatch),
	}
	var family int
	rc.Control(func(fd uintptr) {
		if sa, err := unix.Getsockname(int(fd)); err == nil {
			if _, ok := sa.(*unix.SockaddrInet6); ok {
				family = unix.AF_INET6
			} else if _, ok := sa.(*unix.SockaddrInet4); ok {
				family = unix.AF_INET
			}
		}
	})
	if family == 0 {
		return &genericIO{pc: pc, udp: udp}
	}
	m.v6 = family == unix.AF_INET6
	for i := range m.hdrs {
		h := &m.hdrs[i].hdr
		h.Name = (*byte)(unsafe.Pointer(&m.names[i]))
		h.Iov = &m.iovs[i]
		h.SetIovlen(1)
	}
	m.readFn = m.recv
	m.writeFn = m.send
	return m
}

func (m *mmsgIO) recv(fd uintptr) bool { return m.mmsg(unix.SYS_RECVMMSG, fd) }

func (m *mmsgIO) send(fd uintptr) bool { return m.mmsg(unix.SYS_SENDMMSG, fd) }

// mmsg moves the batch with recvmmsg or sendmmsg (trap), retrying on
// EINTR; it reports false when the socket is not ready (EAGAIN), so that
// the runtime's poller waits.
func (m *mmsgIO) mmsg(trap, fd uintptr) bool {
	for {
		n, _, e := unix.Syscall6(trap, fd, uintptr(unsafe.Pointer(&m.hdrs[0])), uintptr(m.count), 0, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		m.n, m.errno = int(n), e
		return true
	}
}

func (m *mmsgIO) read(rx []rxMsg) (int, error) {
	m.count = min(len(rx), len(m.hdrs))
	for i := range m.count {
		m.iovs[i].Base = &rx[i].buf[0]
		m.iovs[i].SetLen(len(rx[i].buf))
		m.hdrs[i].hdr.Namelen = unix.SizeofSockaddrInet6
		m.hdrs[i].hdr.Flags = 0
	}
	if err := m.rc.Read(m.readFn); err != nil {
		return 0, err
	}
	if m.errno != 0 {
		return 0, m.errno
	}
	for i := range m.n {
		rx[i].n = int(m.hdrs[i].n)
		rx[i].from = m.sockaddr(i)
		m.iovs[i].Base = nil
	}
	return m.n, nil
}

// sockaddr decodes the source address of message i.
func (m *mmsgIO) sockaddr(i int) netip.AddrPort {
	sa := &m.names[i]
	port := func(p *uint16) uint16 {
		b := (*[2]byte)(unsafe.Pointer(p))
		return uint16(b[0])<<8 | uint16(b[1])
	}
	switch sa.Family {
	case unix.AF_INET6:
		a := netip.AddrFrom16(sa.Addr)
		if sa.Scope_id != 0 { // link-local: the reply needs the interface
			a = a.WithZone(strconv.FormatUint(uint64(sa.Scope_id), 10))
		}
		return netip.AddrPortFrom(a, port(&sa.Port))
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port(&sa4.Port))
	}
	return netip.AddrPort{}
}

// setSockaddr encodes to as message i's destination.
func (m *mmsgIO) setSockaddr(i int, to netip.AddrPort) bool {
	sa := &m.names[i]
	*sa = unix.RawSockaddrInet6{}
	pb := (*[2]byte)(unsafe.Pointer(&sa.Port))
	pb[0], pb[1] = byte(to.Port()>>8), byte(to.Port())
	a := to.Addr()
	if m.v6 {
		sa.Family = unix.AF_INET6
		sa.Addr = a.As16()
		if z := a.Zone(); z != "" {
			id, err := strconv.ParseUint(z, 10, 32)
			if err != nil {
				return false
			}
			sa.Scope_id = uint32(id)
		}
		m.hdrs[i].hdr.Namelen = unix.SizeofSockaddrInet6
		return true
	}
	if a = a.Unmap(); !a.Is4() {
		return false
	}
	sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
	sa4.Family = unix.AF_INET
	sa4.Addr = a.As4()
	m.hdrs[i].hdr.Namelen = unix.SizeofSockaddrInet4
	return true
}

func (m *mmsgIO) write(tx []txMsg) error {
	var first error
	for len(tx) > 0 {
		m.count = 0
		for len(tx) > 0 && m.count < len(m.hdrs) {
			if m.setSockaddr(m.count, tx[0].to) && len(tx[0].buf) > 0 {
				m.iovs[m.count].Base = &tx[0].buf[0]
				m.iovs[m.count].SetLen(len(tx[0].buf))
				m.hdrs[m.count].hdr.Flags = 0
				m.count++
			}
			tx = tx[1:]
		}
		for m.count > 0 {
			if err := m.rc.Write(m.writeFn); err != nil {
				return err
			}
			if m.errno != 0 {
				// The first message failed (a bad destination, a full
				// buffer): skip it and send the rest.
				if first == nil {
					first = m.errno
				}
				m.n = 1
			}
			m.shift(max(m.n, 1))
		}
	}
	for i := range m.iovs {
		m.iovs[i].Base = nil
	}
	return first
}

// shift drops the first n messages of the batch in progress.
func (m *mmsgIO) shift(n int) {
	if n >= m.count {
		m.count = 0
		return
	}
	copy(m.iovs, m.iovs[n:m.count])
	copy(m.names, m.names[n:m.count])
	for i := range m.count - n {
		m.hdrs[i].hdr.Namelen = m.hdrs[i+n].hdr.Namelen
	}
	m.count -= n
}
