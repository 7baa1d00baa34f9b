package turn

import (
	"net"
	"testing"
)

func TestPeerPolicy(t *testing.T) {
	public := peerPolicy{}                             // a relay on a public address
	lan := peerPolicy{private: true}                   // a relay on a private one
	local := peerPolicy{loopback: true, private: true} // a relay on loopback
	for _, tc := range []struct {
		peer               string
		public, lan, local bool
	}{
		{"203.0.113.7", true, true, true},
		{"2001:db8::1", true, true, true},
		{"10.1.2.3", false, true, true},
		{"192.168.1.20", false, true, true},
		{"fd00::1", false, true, true},
		{"127.0.0.1", false, false, true},
		{"::1", false, false, true},
		{"169.254.169.254", false, false, false}, // cloud metadata
		{"fe80::1", false, false, false},
		{"224.0.0.251", false, false, false},
		{"0.0.0.0", false, false, false},
		{"255.255.255.255", false, false, false},
	} {
		ip := net.ParseIP(tc.peer)
		for name, c := range map[string]struct {
			p    peerPolicy
			want bool
		}{"public": {public, tc.public}, "lan": {lan, tc.lan}, "local": {local, tc.local}} {
			if got := c.p.allows(ip); got != c.want {
				t.Errorf("%s relay, peer %s: allowed %v, want %v", name, tc.peer, got, c.want)
			}
		}
	}
}
