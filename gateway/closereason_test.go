package gateway

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// A close reason longer than a control frame allows is cut, at a rune
// boundary, so the close frame still goes out with its code.
func TestCloseReasonFitsAControlFrame(t *testing.T) {
	for _, reason := range []string{"", "short", strings.Repeat("a", 200), strings.Repeat("é", 100), strings.Repeat("a", 122) + "€"} {
		got := closeReason(reason)
		if len(got) > maxCloseReason || !utf8.ValidString(got) || !strings.HasPrefix(reason, got) {
			t.Errorf("closeReason(%d bytes) = %d bytes %q", len(reason), len(got), got)
		}
		if len(reason) <= maxCloseReason && got != reason {
			t.Errorf("closeReason cut a reason that fits: %q", got)
		}
	}
}
