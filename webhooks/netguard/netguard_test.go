package netguard_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opsgate/opsgate/webhooks/netguard"
)

func TestForbidden(t *testing.T) {
	cases := []struct {
		addr string
		bad  bool
		why  string // checked when not empty
	}{
		{"127.0.0.1", true, "a loopback address"},
		{"127.255.0.9", true, "a loopback address"},
		{"::1", true, "a loopback address"},
		{"10.1.2.3", true, "a private address"},
		{"172.16.0.1", true, "a private address"},
		{"172.31.255.255", true, "a private address"},
		{"192.168.1.1", true, "a private address"},
		{"fc00::1", true, "a private address"},
		{"fd00:ec2::254", true, "a private address"},
		{"100.64.0.1", true, "a shared (carrier-grade NAT) address"},
		{"100.100.100.200", true, ""},
		{"169.254.169.254", true, "a link-local address"},
		{"fe80::1", true, "a link-local address"},
		{"fe80::1%eth0", true, "a link-local address"},
		{"fec0::1", true, "a site-local address"},
		{"0.0.0.0", true, "an unspecified address"},
		{"::", true, "an unspecified address"},
		{"0.1.2.3", true, `a "this network" address`},
		{"255.255.255.255", true, "a broadcast address"},
		{"224.0.0.1", true, "a multicast address"},
		{"239.255.255.250", true, "a multicast address"},
		{"ff02::1", true, "a multicast address"},
		{"ff01::1", true, "a multicast address"},
		{"ff0e::1", true, "a multicast address"},
		{"::ffff:127.0.0.1", true, "a loopback address"},
		{"::ffff:10.0.0.1", true, "a private address"},
		{"::ffff:169.254.169.254", true, "a link-local address"},
		{"::ffff:0.0.0.0", true, "an unspecified address"},
		{"64:ff9b::7f00:1", true, "a NAT64 address embedding 127.0.0.1, which is a loopback address"},
		{"64:ff9b::a9fe:a9fe", true, ""},
		{"2002:c0a8:0101::1", true, "a 6to4 address embedding 192.168.1.1, which is a private address"},

		{"8.8.8.8", false, ""},
		{"1.1.1.1", false, ""},
		{"2606:4700::1111", false, ""},
		{"2001:4860:4860::8888", false, ""},
		{"::ffff:8.8.8.8", false, ""},
		{"64:ff9b::808:808", false, ""},
		{"2002:0808:0808::1", false, ""},
		{"172.15.255.255", false, ""},
		{"172.32.0.0", false, ""},
		{"100.63.255.255", false, ""},
		{"100.128.0.0", false, ""},
		{"11.0.0.1", false, ""},
		{"192.169.0.1", false, ""},
	}
	for _, c := range cases {
		why, bad := netguard.Forbidden(netip.MustParseAddr(c.addr))
		if bad != c.bad {
			t.Errorf("Forbidden(%s) = %q, %v; want bad=%v", c.addr, why, bad, c.bad)
			continue
		}
		if bad && why == "" {
			t.Errorf("Forbidden(%s) gives no reason", c.addr)
		}
		if !bad && why != "" {
			t.Errorf("Forbidden(%s) gives reason %q for an allowed address", c.addr, why)
		}
		if c.why != "" && why != c.why {
			t.Errorf("Forbidden(%s) reason = %q, want %q", c.addr, why, c.why)
		}
	}
	if _, bad := netguard.Forbidden(netip.Addr{}); !bad {
		t.Error("Forbidden(zero Addr) = false, want true")
	}
}

func TestRefusedErrorMessage(t *testing.T) {
	cases := []struct {
		err  *netguard.RefusedError
		want string
	}{
		{&netguard.RefusedError{Addr: netip.MustParseAddr("127.0.0.1"), Reason: "a loopback address"},
			"netguard: refused: 127.0.0.1 is a loopback address"},
		{&netguard.RefusedError{Host: "internal.example", Addr: netip.MustParseAddr("10.0.0.1"), Reason: "a private address"},
			"netguard: refused: internal.example resolves to 10.0.0.1, which is a private address"},
		{&netguard.RefusedError{Host: "localhost", Reason: "a loopback name (RFC 6761)"},
			"netguard: refused: localhost is a loopback name (RFC 6761)"},
	}
	for _, c := range cases {
		if got := c.err.Error(); got != c.want {
			t.Errorf("Error() = %q, want %q", got, c.want)
		}
		if !errors.Is(c.err, netguard.ErrRefused) {
			t.Errorf("%v does not wrap ErrRefused", c.err)
		}
	}
}

var sentinels = []error{netguard.ErrInvalidURL, netguard.ErrScheme, netguard.ErrUnresolvable, netguard.ErrRefused}

// checkSentinel fails unless err wraps want and no other sentinel; a nil
// want means err must be nil.
func checkSentinel(t *testing.T, what string, err, want error) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Errorf("%s: unexpected error %v", what, err)
		}
		return
	}
	for _, s := range sentinels {
		if got := errors.Is(err, s); got != (s == want) {
			t.Errorf("%s: error %v: errors.Is(%v) = %v", what, err, s, got)
		}
	}
}

func TestCheckURL(t *testing.T) {
	resolver := newFakeDNS(t, map[string][]string{
		"public.example.test.":   {"8.8.8.8", "2606:4700::1111"},
		"mixed.example.test.":    {"8.8.8.8", "10.0.0.1"},
		"rebind6.example.test.":  {"::1"},
		"mapped.example.test.":   {"::ffff:169.254.169.254"},
		"metadata.example.test.": {"169.254.169.254"},
		"cgnat.example.test.":    {"100.100.100.200"},
	}).resolver()

	cases := []struct {
		url          string
		want         error // with allowPrivate false
		wantAllowing error // with allowPrivate true
	}{
		// Shape and scheme are checked regardless of allowPrivate.
		{"ftp://example.com/hook", netguard.ErrScheme, netguard.ErrScheme},
		{"file:///etc/passwd", netguard.ErrScheme, netguard.ErrScheme},
		{"javascript:alert(1)", netguard.ErrScheme, netguard.ErrScheme},
		{"gopher://8.8.8.8/", netguard.ErrScheme, netguard.ErrScheme},
		{"http://user:pw@x/", netguard.ErrInvalidURL, netguard.ErrInvalidURL},
		{"https://user@public.example.test/", netguard.ErrInvalidURL, netguard.ErrInvalidURL},
		{"", netguard.ErrInvalidURL, netguard.ErrInvalidURL},
		{"/relative/hook", netguard.ErrInvalidURL, netguard.ErrInvalidURL},
		{"public.example.test/hook", netguard.ErrInvalidURL, netguard.ErrInvalidURL},
		{"http:///hook", netguard.ErrInvalidURL, netguard.ErrInvalidURL},
		{"http:opaque", netguard.ErrInvalidURL, netguard.ErrInvalidURL},
		{"http://[::1/", netguard.ErrInvalidURL, netguard.ErrInvalidURL},
		{"http://exa mple.test/", netguard.ErrInvalidURL, netguard.ErrInvalidURL},

		// IP literals.
		{"http://127.0.0.1:8080/x", netguard.ErrRefused, nil},
		{"http://[::1]/", netguard.ErrRefused, nil},
		{"http://[::ffff:127.0.0.1]/", netguard.ErrRefused, nil},
		{"http://[fe80::1%25eth0]/", netguard.ErrRefused, nil},
		{"http://169.254.169.254/latest/meta-data/", netguard.ErrRefused, nil},
		{"http://0.0.0.0:9000/", netguard.ErrRefused, nil},
		{"http://10.1.2.3/", netguard.ErrRefused, nil},
		{"http://8.8.8.8/", nil, nil},
		{"HTTPS://8.8.8.8/hook", nil, nil},
		{"https://[2606:4700::1111]:8443/hook", nil, nil},

		// Names.
		{"http://localhost/", netguard.ErrRefused, nil},
		{"http://LocalHost.:8080/", netguard.ErrRefused, nil},
		{"http://api.localhost/", netguard.ErrRefused, nil},
		{"https://public.example.test/hook", nil, nil},
		{"https://PUBLIC.example.test./hook", nil, nil},
		{"https://mixed.example.test/hook", netguard.ErrRefused, nil},
		{"https://rebind6.example.test/hook", netguard.ErrRefused, nil},
		{"https://mapped.example.test/hook", netguard.ErrRefused, nil},
		{"https://metadata.example.test/hook", netguard.ErrRefused, nil},
		{"https://cgnat.example.test/hook", netguard.ErrRefused, nil},
		{"https://missing.example.test/hook", netguard.ErrUnresolvable, nil},
		// Legacy spellings of 127.0.0.1 are not IP literals to net/netip, so
		// they are looked up as names, which fails here. Were a resolver to
		// turn them into 127.0.0.1, that address would be refused.
		{"http://2130706433/", netguard.ErrUnresolvable, nil},
		{"http://127.1/", netguard.ErrUnresolvable, nil},
	}
	ctx := context.Background()
	for _, c := range cases {
		checkSentinel(t, c.url, netguard.CheckURL(ctx, c.url, false, resolver), c.want)
		checkSentinel(t, c.url+" (allowPrivate)", netguard.CheckURL(ctx, c.url, true, resolver), c.wantAllowing)
	}
}

func TestCheckURLRefusalDetails(t *testing.T) {
	resolver := newFakeDNS(t, map[string][]string{
		"mixed.example.test.": {"8.8.8.8", "10.0.0.1"},
	}).resolver()
	ctx := context.Background()

	var re *netguard.RefusedError
	err := netguard.CheckURL(ctx, "http://127.0.0.1:8080/x", false, resolver)
	if !errors.As(err, &re) || re.Addr != netip.MustParseAddr("127.0.0.1") || re.Host != "" {
		t.Fatalf("CheckURL(127.0.0.1) = %#v", err)
	}
	if got, want := err.Error(), "netguard: refused: 127.0.0.1 is a loopback address"; got != want {
		t.Errorf("message = %q, want %q", got, want)
	}

	err = netguard.CheckURL(ctx, "https://mixed.example.test/hook", false, resolver)
	if !errors.As(err, &re) || re.Host != "mixed.example.test" || re.Addr != netip.MustParseAddr("10.0.0.1") {
		t.Fatalf("CheckURL(mixed) = %#v", err)
	}
	if got, want := err.Error(), "netguard: refused: mixed.example.test resolves to 10.0.0.1, which is a private address"; got != want {
		t.Errorf("message = %q, want %q", got, want)
	}

	err = netguard.CheckURL(ctx, "https://missing.example.test/hook", false, resolver)
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) {
		t.Errorf("unresolvable error %v does not keep the *net.DNSError", err)
	}
}

func TestDialerControl(t *testing.T) {
	if d := netguard.Dialer(true, time.Second); d.Control != nil || d.ControlContext != nil || d.Timeout != time.Second {
		t.Fatalf("Dialer(true) = %+v, want no control function and the timeout", d)
	}
	d := netguard.Dialer(false, 3*time.Second)
	if d.Control == nil || d.Timeout != 3*time.Second {
		t.Fatalf("Dialer(false) = %+v, want a control function and the timeout", d)
	}
	cases := []struct {
		network, address string
		refused          bool
	}{
		{"tcp4", "127.0.0.1:80", true},
		{"tcp6", "[::1]:443", true},
		{"tcp6", "[::ffff:127.0.0.1]:80", true},
		{"tcp4", "10.1.2.3:80", true},
		{"tcp4", "169.254.169.254:80", true},
		{"tcp6", "[fe80::1%eth0]:80", true},
		{"tcp6", "[fd00::1]:80", true},
		{"tcp4", "0.0.0.0:80", true},
		{"tcp4", "not-an-address", true},
		{"tcp4", "8.8.8.8:443", false},
		{"tcp6", "[2606:4700::1111]:443", false},
	}
	for _, c := range cases {
		err := d.Control(c.network, c.address, nil)
		if c.refused {
			var re *netguard.RefusedError
			if !errors.Is(err, netguard.ErrRefused) || !errors.As(err, &re) {
				t.Errorf("Control(%s, %s) = %v, want a *RefusedError", c.network, c.address, err)
			}
		} else if err != nil {
			t.Errorf("Control(%s, %s) = %v, want nil", c.network, c.address, err)
		}
	}
}

func newClient(d *net.Dialer) *http.Client {
	return &http.Client{
		Transport: &http.Transport{DialContext: d.DialContext},
		Timeout:   5 * time.Second,
	}
}

func TestDialerWithHTTPClient(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "delivered")
	}))
	defer srv.Close()
	if !strings.HasPrefix(srv.URL, "http://127.0.0.1:") {
		t.Fatalf("test server is at %s, want 127.0.0.1", srv.URL)
	}
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("refused", func(t *testing.T) {
		client := newClient(netguard.Dialer(false, 2*time.Second))
		defer client.CloseIdleConnections()
		for _, target := range []string{srv.URL, "http://localhost:" + u.Port()} {
			resp, err := client.Get(target + "/hook")
			if err == nil {
				_ = resp.Body.Close()
				t.Fatalf("GET %s succeeded, want refusal", target)
			}
			if !errors.Is(err, netguard.ErrRefused) {
				t.Fatalf("GET %s error = %v, want ErrRefused", target, err)
			}
			var re *netguard.RefusedError
			if !errors.As(err, &re) || !re.Addr.IsLoopback() {
				t.Fatalf("GET %s error = %v, want a *RefusedError for a loopback address", target, err)
			}
			t.Logf("GET %s: %v", target, err)
		}
	})

	t.Run("allowed", func(t *testing.T) {
		client := newClient(netguard.Dialer(true, 2*time.Second))
		defer client.CloseIdleConnections()
		resp, err := client.Get(srv.URL + "/hook")
		if err != nil {
			t.Fatalf("GET with allowPrivate: %v", err)
		}
		defer func() { _ = resp.Body.Close() }()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK || string(body) != "delivered" {
			t.Fatalf("GET with allowPrivate = %d %q", resp.StatusCode, body)
		}
	})
}

// TestDialerDefeatsRebinding has a name resolve to a public address when the
// URL is checked and to the loopback test server when the delivery is made.
// The URL check passes; the delivery is refused by the dialer.
func TestDialerDefeatsRebinding(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		t.Error("the delivery reached the internal server")
	}))
	defer srv.Close()
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}

	dns := newFakeDNS(t, map[string][]string{"rebind.example.test.": {"8.8.8.8"}})
	target := "http://rebind.example.test:" + u.Port() + "/hook"
	if err := netguard.CheckURL(context.Background(), target, false, dns.resolver()); err != nil {
		t.Fatalf("CheckURL before rebinding: %v", err)
	}

	dns.set("rebind.example.test.", "127.0.0.1")
	d := netguard.Dialer(false, 2*time.Second)
	d.Resolver = dns.resolver()
	client := newClient(d)
	defer client.CloseIdleConnections()
	resp, err := client.Get(target)
	if err == nil {
		_ = resp.Body.Close()
		t.Fatal("delivery after rebinding succeeded, want refusal")
	}
	if !errors.Is(err, netguard.ErrRefused) {
		t.Fatalf("delivery after rebinding error = %v, want ErrRefused", err)
	}
}

// fakeDNS is a minimal DNS server on a loopback UDP socket that answers A
// and AAAA questions from a table and NXDOMAIN for unknown names, so that
// name resolution can be tested without network access.
type fakeDNS struct {
	conn net.PacketConn

	mu      sync.Mutex
	records map[string][]netip.Addr // keyed by lower-case name with a trailing dot
}

func newFakeDNS(t *testing.T, records map[string][]string) *fakeDNS {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("starting fake DNS server: %v", err)
	}
	f := &fakeDNS{conn: conn, records: map[string][]netip.Addr{}}
	for name, addrs := range records {
		f.set(name, addrs...)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.serve()
	}()
	t.Cleanup(func() {
		_ = conn.Close()
		<-done
	})
	return f
}

func (f *fakeDNS) set(name string, addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.records[name] = nil
	for _, a := range addrs {
		f.records[name] = append(f.records[name], netip.MustParseAddr(a))
	}
}

// resolver returns a pure-Go resolver that sends every query to f.
func (f *fakeDNS) resolver() *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", f.conn.LocalAddr().String())
		},
	}
}

func (f *fakeDNS) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := f.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		if resp := f.answer(buf[:n]); resp != nil {
			_, _ = f.conn.WriteTo(resp, from)
		}
	}
}

// answer builds the response to one query, or returns nil to drop it.
func (f *fakeDNS) answer(q []byte) []byte {
	const headerLen = 12
	if len(q) < headerLen || binary.BigEndian.Uint16(q[4:6]) != 1 {
		return nil
	}
	// Read the question name, a sequence of length-prefixed labels.
	var name strings.Builder
	off := headerLen
	for {
		if off >= len(q) {
			return nil
		}
		l := int(q[off])
		off++
		if l == 0 {
			break
		}
		if l > 63 || off+l > len(q) {
			return nil
		}
		name.WriteString(strings.ToLower(string(q[off : off+l])))
		name.WriteByte('.')
		off += l
	}
	if off+4 > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[off : off+2])
	question := q[headerLen : off+4]

	f.mu.Lock()
	addrs, known := f.records[name.String()]
	f.mu.Unlock()

	var answers [][]byte
	for _, a := range addrs {
		var rtype uint16
		var rdata []byte
		switch {
		case qtype == 1 && a.Is4(): // A
			rtype, rdata = 1, a.AsSlice()
		case qtype == 28 && a.Is6(): // AAAA
			rtype, rdata = 28, a.AsSlice()
		default:
			continue
		}
		rr := []byte{0xc0, headerLen} // pointer to the question name
		rr = binary.BigEndian.AppendUint16(rr, rtype)
		rr = binary.BigEndian.AppendUint16(rr, 1)  // class IN
		rr = binary.BigEndian.AppendUint32(rr, 60) // TTL
		rr = binary.BigEndian.AppendUint16(rr, uint16(len(rdata)))
		answers = append(answers, append(rr, rdata...))
	}

	flags := uint16(0x8180) // response, recursion desired and available
	if !known {
		flags |= 3 // NXDOMAIN
	}
	resp := append([]byte{}, q[0:2]...) // query ID
	resp = binary.BigEndian.AppendUint16(resp, flags)
	resp = binary.BigEndian.AppendUint16(resp, 1) // questions
	resp = binary.BigEndian.AppendUint16(resp, uint16(len(answers)))
	resp = binary.BigEndian.AppendUint16(resp, 0) // authority records
	resp = binary.BigEndian.AppendUint16(resp, 0) // additional records
	resp = append(resp, question...)
	for _, rr := range answers {
		resp = append(resp, rr...)
	}
	return resp
}
