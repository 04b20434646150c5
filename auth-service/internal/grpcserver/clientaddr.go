package grpcserver

import (
	"context"
	"net"
	"net/netip"
	"strings"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// maxForwardedHops bounds how many x-forwarded-for entries are examined, so
// a long header costs little.
const maxForwardedHops = 32

// clientAddr returns the address of the client: the peer address, or, when
// the peer is one of the trusted proxies, the right-most x-forwarded-for
// entry that is not itself a trusted proxy. It returns the zero Addr when
// the peer address is unknown (for example over a Unix socket).
func clientAddr(ctx context.Context, trusted []netip.Prefix) netip.Addr {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return netip.Addr{}
	}
	addr := peerAddr(p.Addr)
	if !addr.IsValid() || !isTrusted(addr, trusted) {
		return addr
	}

	md, _ := metadata.FromIncomingContext(ctx)
	var hops []string
	for _, value := range md.Get("x-forwarded-for") {
		hops = append(hops, strings.Split(value, ",")...)
	}

	// Each proxy appends the address it received the request from, so the
	// right-most entries are the most trustworthy. Walk left past trusted
	// proxies; the first other address is the client.
	for i := len(hops) - 1; i >= 0 && i >= len(hops)-maxForwardedHops; i-- {
		hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		hop = hop.Unmap()
		addr = hop
		if !isTrusted(hop, trusted) {
			break
		}
	}
	return addr
}

func peerAddr(a net.Addr) netip.Addr {
	if tcp, ok := a.(*net.TCPAddr); ok {
		addr, _ := netip.AddrFromSlice(tcp.IP)
		return addr.Unmap()
	}
	addrPort, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return addrPort.Addr().Unmap()
}

func isTrusted(addr netip.Addr, trusted []netip.Prefix) bool {
	for _, prefix := range trusted {
		if prefix.Contains(addr) {
			return true
		}
	}
	return false
}
