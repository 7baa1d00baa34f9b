package persistence

import "strings"

// HandleKey is the key under which a store claims and looks up a handle:
// two handles with the same key are the same handle. It folds what a
// reader cannot tell apart, so nobody can register a look-alike of
// someone else's name:
//
//   - case: "Casey" is "casey";
//   - the ASCII look-alikes of Unicode's confusables list (UTS #39) that a
//     handle's alphabet (A-Z a-z 0-9 . _ + -) allows: 0 is o, and 1, I
//     and l are one letter (so i, folded from I, is l too).
//
// The folding is done in the stores, on the uniqueness key only: a user
// keeps the handle as typed at registration (User.Handle), and every
// spelling that folds to it finds the user. Handles stored before this
// folding existed are still found by their exact spelling (each store
// falls back to it).
func HandleKey(handle string) string {
	return handleFolder.Replace(strings.ToLower(handle))
}

var handleFolder = strings.NewReplacer("0", "o", "1", "l", "i", "l")
