// Package netguard keeps outgoing webhook deliveries away from internal
// networks, so that a tenant cannot use a webhook URL to make the server
// reach its own loopback interface, a private network, or a cloud metadata
// endpoint (server-side request forgery).
//
// There are two layers. CheckURL validates a URL when a subscription is
// created, resolving its host name and rejecting it if any address is
// forbidden, so that the tenant gets an immediate, specific error. Dialer
// returns a net.Dialer that checks the address actually being connected to,
// after name resolution, on every delivery; that is what stops a host name
// that resolved to a public address at creation time and to an internal one
// later (DNS rebinding).
package netguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// These sentinel errors classify why CheckURL or a Dialer rejected a
// destination. Every error from this package wraps exactly one of them, so
// callers can map them to distinct responses with errors.Is.
var (
	// ErrInvalidURL means the URL does not parse, is not absolute, has no
	// host, or carries user information.
	ErrInvalidURL = errors.New("netguard: invalid webhook URL")
	// ErrScheme means the URL's scheme is not http or https.
	ErrScheme = errors.New("netguard: webhook URL scheme must be http or https")
	// ErrUnresolvable means the URL's host name could not be resolved.
	ErrUnresolvable = errors.New("netguard: webhook host cannot be resolved")
	// ErrRefused means the destination is, or resolves to, a forbidden
	// address. The errors wrapping it are *RefusedError values.
	ErrRefused = errors.New("netguard: webhook destination refused")
)

// RefusedError reports a destination refused because of its address. It
// wraps ErrRefused.
type RefusedError struct {
	// Host is the host name from the URL when CheckURL refused a name
	// rather than an IP literal. For a Dialer it is the address it could
	// not parse, if any. Otherwise it is empty.
	Host string
	// Addr is the refused address. It is the zero Addr when the host name
	// itself is refused, as for localhost.
	Addr netip.Addr
	// Reason says what kind of address or name it is, for example
	// "a loopback address".
	Reason string
}

// Error returns a sentence such as "127.0.0.1 is a loopback address".
func (e *RefusedError) Error() string {
	switch {
	case e.Addr.IsValid() && e.Host != "" && e.Host != e.Addr.String():
		return fmt.Sprintf("netguard: refused: %s resolves to %s, which is %s", e.Host, e.Addr, e.Reason)
	case e.Addr.IsValid():
		return fmt.Sprintf("netguard: refused: %s is %s", e.Addr, e.Reason)
	default:
		return fmt.Sprintf("netguard: refused: %s is %s", e.Host, e.Reason)
	}
}

// Unwrap returns ErrRefused.
func (e *RefusedError) Unwrap() error { return ErrRefused }

var (
	// sharedAddressSpace is 100.64.0.0/10 (RFC 6598), used for carrier-grade
	// NAT and by some clouds for internal services such as metadata
	// endpoints.
	sharedAddressSpace = netip.MustParsePrefix("100.64.0.0/10")
	// thisNetwork is 0.0.0.0/8 (RFC 1122), which is not a valid destination.
	thisNetwork = netip.MustParsePrefix("0.0.0.0/8")
	// limitedBroadcast is 255.255.255.255.
	limitedBroadcast = netip.MustParseAddr("255.255.255.255")
	// siteLocal is fec0::/10, the deprecated IPv6 predecessor of unique
	// local addresses, still routed internally by some networks.
	siteLocal = netip.MustParsePrefix("fec0::/10")
	// nat64 is the well-known NAT64 prefix 64:ff9b::/96 (RFC 6052), whose
	// last 32 bits are an IPv4 address a NAT64 gateway will connect to.
	nat64 = netip.MustParsePrefix("64:ff9b::/96")
	// sixToFour is 2002::/16 (RFC 3056), whose bits 16 to 47 are an IPv4
	// address a 6to4 relay will forward to.
	sixToFour = netip.MustParsePrefix("2002::/16")
)

// Forbidden reports whether a delivery must not connect to ip and, if so,
// why, as a phrase such as "a loopback address". IPv4-mapped IPv6 addresses
// are judged by the IPv4 address they map, and so are IPv4 addresses
// embedded in the NAT64 and 6to4 prefixes. Forbidden addresses are the
// invalid, unspecified, loopback, private (RFC 1918, RFC 6598 shared address
// space 100.64.0.0/10, IPv6 unique local fc00::/7 and site-local fec0::/10),
// link-local, multicast and broadcast ones, and 0.0.0.0/8.
func Forbidden(ip netip.Addr) (why string, bad bool) {
	if !ip.IsValid() {
		return "an invalid address", true
	}
	ip = ip.Unmap()
	switch {
	case ip.IsUnspecified():
		return "an unspecified address", true
	case ip.IsLoopback():
		return "a loopback address", true
	case ip.IsPrivate():
		return "a private address", true
	case ip.IsLinkLocalUnicast():
		return "a link-local address", true
	case ip.IsMulticast():
		return "a multicast address", true
	case sharedAddressSpace.Contains(ip):
		return "a shared (carrier-grade NAT) address", true
	case thisNetwork.Contains(ip):
		return `a "this network" address`, true
	case ip == limitedBroadcast:
		return "a broadcast address", true
	case siteLocal.Contains(ip):
		return "a site-local address", true
	}
	if ip.Is6() {
		b := ip.As16()
		var embedded netip.Addr
		var kind string
		switch {
		case nat64.Contains(ip):
			embedded, kind = netip.AddrFrom4([4]byte(b[12:16])), "NAT64"
		case sixToFour.Contains(ip):
			embedded, kind = netip.AddrFrom4([4]byte(b[2:6])), "6to4"
		}
		if embedded.IsValid() {
			if why, bad := Forbidden(embedded); bad {
				return fmt.Sprintf("a %s address embedding %s, which is %s", kind, embedded, why), true
			}
		}
	}
	return "", false
}

// CheckURL validates a webhook URL before it is stored. The URL must be
// absolute, use the http or https scheme, name a host and carry no user
// information; otherwise the error wraps ErrScheme or ErrInvalidURL.
//
// Unless allowPrivate is set, the host must also be public: an IP literal
// must not be Forbidden, the name localhost and names under .localhost are
// refused without a lookup, and any other name is resolved with resolver
// (net.DefaultResolver if nil) and refused if any of its addresses is
// Forbidden. Such refusals wrap ErrRefused and are *RefusedError values; a
// failed lookup wraps ErrUnresolvable. When allowPrivate is set, no lookup
// is made.
//
// A successful check does not make later deliveries safe, because the name
// may resolve differently by then; deliveries must also use Dialer.
func CheckURL(ctx context.Context, raw string, allowPrivate bool, resolver *net.Resolver) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidURL, err)
	}
	if u.Scheme == "" {
		return fmt.Errorf("%w: %q is not an absolute URL", ErrInvalidURL, raw)
	}
	if scheme := strings.ToLower(u.Scheme); scheme != "http" && scheme != "https" {
		return fmt.Errorf("%w: got %q", ErrScheme, u.Scheme)
	}
	if u.Opaque != "" {
		return fmt.Errorf("%w: %q has no host", ErrInvalidURL, raw)
	}
	if u.User != nil {
		return fmt.Errorf("%w: user information is not allowed in the URL", ErrInvalidURL)
	}
	host := u.Hostname()
	if host == "" {
		return fmt.Errorf("%w: %q has no host", ErrInvalidURL, raw)
	}
	if allowPrivate {
		return nil
	}

	if ip, err := netip.ParseAddr(host); err == nil {
		if why, bad := Forbidden(ip); bad {
			return &RefusedError{Addr: ip, Reason: why}
		}
		return nil
	}

	name := strings.ToLower(strings.TrimSuffix(host, "."))
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		return &RefusedError{Host: host, Reason: "a loopback name (RFC 6761)"}
	}

	if resolver == nil {
		resolver = net.DefaultResolver
	}
	addrs, err := resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return fmt.Errorf("%w: looking up %s: %w", ErrUnresolvable, host, err)
	}
	if len(addrs) == 0 {
		return fmt.Errorf("%w: %s has no addresses", ErrUnresolvable, host)
	}
	for _, ip := range addrs {
		if why, bad := Forbidden(ip); bad {
			return &RefusedError{Host: host, Addr: ip, Reason: why}
		}
	}
	return nil
}

// Dialer returns a dialer for delivering webhooks with the given connect
// timeout (zero means none, as for net.Dialer). Unless allowPrivate is set,
// its Control function refuses, with an error wrapping ErrRefused, every
// connection whose resolved address is Forbidden. A dial to a name with
// several addresses moves on to the next address after a refusal, as after
// any other connection failure.
//
// The check applies to whatever the dialer connects to, so an http.Transport
// using it must not send requests through a proxy (leave Proxy nil), or the
// proxy's address would be checked instead of the destination's.
func Dialer(allowPrivate bool, timeout time.Duration) *net.Dialer {
	d := &net.Dialer{Timeout: timeout}
	if !allowPrivate {
		d.Control = control
	}
	return d
}

// control is the net.Dialer Control function installed by Dialer. It runs
// after name resolution and before the connection is made, with address in
// "ip:port" form.
func control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &RefusedError{Host: address, Reason: "not an IP address and port (" + network + ")"}
	}
	if why, bad := Forbidden(ap.Addr()); bad {
		return &RefusedError{Addr: ap.Addr(), Reason: why}
	}
	return nil
}
