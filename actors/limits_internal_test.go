package actors

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/courier-im/courier/protos/courierpb"
)

// A string field added to ClientFrame must get a bound in
// frameStringLimits: this walks the schema, so none is forgotten.
func TestEveryClientFrameStringIsBounded(t *testing.T) {
	seen := map[protoreflect.FullName]bool{}
	var walk func(md protoreflect.MessageDescriptor)
	walk = func(md protoreflect.MessageDescriptor) {
		if seen[md.FullName()] {
			return
		}
		seen[md.FullName()] = true
		fields := md.Fields()
		for i := 0; i < fields.Len(); i++ {
			fd := fields.Get(i)
			switch {
			case fd.IsMap():
				t.Errorf("%s is a map: bound its keys and values in frameStringLimits and checkBounds", fd.FullName())
			case fd.Kind() == protoreflect.StringKind:
				if _, ok := frameStringLimits[fd.FullName()]; !ok {
					t.Errorf("%s has no bound in frameStringLimits", fd.FullName())
				}
			case fd.Kind() == protoreflect.MessageKind:
				walk(fd.Message())
			}
		}
	}
	walk((&courierpb.ClientFrame{}).ProtoReflect().Descriptor())
	for name := range frameStringLimits {
		if !strings.HasPrefix(string(name), "courier.v1.") {
			t.Errorf("%s: not a courier.v1 field", name)
		}
	}
}

func TestCheckFrameBoundsFindsNestedAndRepeatedStrings(t *testing.T) {
	long := strings.Repeat("x", MaxUserIDLen+1)
	for name, f := range map[string]*courierpb.ClientFrame{
		"repeated": {Body: &courierpb.ClientFrame_PresenceSubscribe{PresenceSubscribe: &courierpb.PresenceSubscribe{UserIds: []string{"ok", long}}}},
		"nested repeated message": {Body: &courierpb.ClientFrame_GroupSend{GroupSend: &courierpb.GroupSend{
			GroupId: "g", ClientMsgId: "m", PerDevice: []*courierpb.GroupDeviceCiphertext{{UserId: "ok"}, {UserId: long}},
		}}},
	} {
		err := CheckFrameBounds(f)
		if _, ok := err.(*FrameBoundsError); !ok {
			t.Errorf("%s: %v, want a FrameBoundsError", name, err)
		}
		if err != nil && strings.Contains(err.Error(), "xxx") {
			t.Errorf("%s: error %q quotes the value", name, err)
		}
	}
	ok := &courierpb.ClientFrame{Body: &courierpb.ClientFrame_Send{Send: &courierpb.Send{
		ToUserId: strings.Repeat("u", MaxUserIDLen), ClientMsgId: strings.Repeat("m", MaxClientMsgIDLen), Ciphertext: make([]byte, 1<<20),
	}}}
	if err := CheckFrameBounds(ok); err != nil {
		t.Fatalf("fields at their bounds: %v", err)
	}
}
