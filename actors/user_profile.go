package actors

import (
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// Limits on what one user keeps in its profile.
const (
	MaxContacts      = 5000
	MaxBlocked       = 5000
	MaxContactsBatch = 256
)

// profile is the User grain's persisted settings (courierpb.UserProfile)
// with lookup sets built on load.
type profile struct {
	pb       *courierpb.UserProfile
	contacts map[string]string // user id → handle
	blocked  map[string]bool
	pushed   map[uint32]bool
}

func newProfile(pb *courierpb.UserProfile) *profile {
	if pb == nil {
		pb = &courierpb.UserProfile{}
	}
	// The sets stay nil until they hold something: most of a million idle
	// users have no blocks and no pending push.
	p := &profile{pb: pb}
	for _, c := range pb.Contacts {
		p.setContact(c.UserId, c.Handle)
	}
	for _, b := range pb.BlockedUserIds {
		p.setBlocked(b)
	}
	for _, d := range pb.PushedDevices {
		p.setPushed(d)
	}
	return p
}

func (p *profile) setContact(id, handle string) {
	if p.contacts == nil {
		p.contacts = make(map[string]string)
	}
	p.contacts[id] = handle
}

func (p *profile) setBlocked(id string) {
	if p.blocked == nil {
		p.blocked = make(map[string]bool)
	}
	p.blocked[id] = true
}

func (p *profile) setPushed(device uint32) {
	if p.pushed == nil {
		p.pushed = make(map[uint32]bool)
	}
	p.pushed[device] = true
}

// record rebuilds the protobuf from the sets, in a stable order.
func (p *profile) record() *courierpb.UserProfile {
	pb := &courierpb.UserProfile{
		PresenceVisibility: p.pb.PresenceVisibility,
		LastSeenMs:         p.pb.LastSeenMs,
		PushTokens:         p.pb.PushTokens,
	}
	for id, h := range p.contacts {
		pb.Contacts = append(pb.Contacts, &courierpb.Contact{UserId: id, Handle: h})
	}
	sort.Slice(pb.Contacts, func(i, j int) bool { return pb.Contacts[i].UserId < pb.Contacts[j].UserId })
	for id := range p.blocked {
		pb.BlockedUserIds = append(pb.BlockedUserIds, id)
	}
	slices.Sort(pb.BlockedUserIds)
	for d := range p.pushed {
		pb.PushedDevices = append(pb.PushedDevices, d)
	}
	slices.Sort(pb.PushedDevices)
	return pb
}

func (p *profile) contactList() *courierpb.ContactList {
	r := p.record()
	return &courierpb.ContactList{Contacts: r.Contacts, BlockedUserIds: r.BlockedUserIds}
}

// setProfile takes the profile the store returned (or its error).
func (g *userGrain) setProfile(b []byte, err error) error {
	switch {
	case errors.Is(err, persistence.ErrNotFound):
		g.profile = newProfile(nil)
		return nil
	case err != nil:
		return fmt.Errorf("load profile of %s: %w", g.id, err)
	}
	pb := &courierpb.UserProfile{}
	if err := proto.Unmarshal(b, pb); err != nil {
		return fmt.Errorf("decode profile of %s: %w", g.id, err)
	}
	g.profile = newProfile(pb)
	return nil
}

// saveProfile writes the profile. It runs on the grain's mailbox: settings
// change rarely, and last seen once per offline transition.
func (g *userGrain) saveProfile() error {
	b, err := proto.Marshal(g.profile.record())
	if err != nil {
		return fmt.Errorf("encode profile: %w", err)
	}
	ctx, cancel := g.storeCtx()
	defer cancel()
	if err := g.deps.Store.PutProfile(ctx, g.id, b); err != nil {
		return fmt.Errorf("save profile of %s: %w", g.id, err)
	}
	return nil
}

// settings serves the user's own requests about its contacts, blocks,
// privacy and push token. Every change is stored before it is answered.
func (g *userGrain) settings(ctx actor.Context, msg *courierpb.UserSettings) {
	if e := g.ready(); e != nil {
		ctx.Respond(&courierpb.UserSettingsReply{Error: e})
		return
	}
	// A refused or unsaved change must not leave memory ahead of the store.
	before := proto.Clone(g.profile.record()).(*courierpb.UserProfile)
	fail := func(e *courierpb.Error) {
		g.profile = newProfile(before)
		ctx.Respond(&courierpb.UserSettingsReply{Error: e})
	}
	var reevaluate []string // viewers whose visibility may have changed; nil: all
	all := false
	switch op := msg.Op.(type) {
	case *courierpb.UserSettings_List:
		ctx.Respond(&courierpb.UserSettingsReply{Contacts: g.profile.contactList(), PresenceVisibility: g.profile.pb.PresenceVisibility})
		return
	case *courierpb.UserSettings_Contacts:
		changed, e := g.updateContacts(op.Contacts)
		if e != nil {
			fail(e)
			return
		}
		reevaluate = changed
	case *courierpb.UserSettings_Block:
		b := op.Block
		switch {
		case b.GetUserId() == "":
			fail(codeError(courierpb.ErrorCode_INVALID_ARGUMENT, "user_id is required", false))
			return
		case b.UserId == g.id:
			fail(codeError(courierpb.ErrorCode_INVALID_ARGUMENT, "a user cannot block itself", false))
			return
		case b.Blocked && !g.profile.blocked[b.UserId] && len(g.profile.blocked) >= MaxBlocked:
			fail(codeError(courierpb.ErrorCode_INVALID_ARGUMENT, fmt.Sprintf("at most %d blocked users", MaxBlocked), false))
			return
		}
		if b.Blocked {
			g.profile.setBlocked(b.UserId)
		} else {
			delete(g.profile.blocked, b.UserId)
		}
		reevaluate = []string{b.UserId}
	case *courierpb.UserSettings_Privacy:
		v := op.Privacy.GetPresence()
		if _, ok := courierpb.Visibility_name[int32(v)]; !ok {
			fail(codeError(courierpb.ErrorCode_INVALID_ARGUMENT, "unknown visibility", false))
			return
		}
		g.profile.pb.PresenceVisibility = v
		all = true
	case *courierpb.UserSettings_PushToken:
		tok := op.PushToken.GetToken()
		switch {
		case !g.hasDevice(msg.DeviceId):
			fail(codeError(courierpb.ErrorCode_FORBIDDEN, "no such device", false))
			return
		case len(tok) > MaxPushTokenLen:
			fail(codeError(courierpb.ErrorCode_INVALID_ARGUMENT, fmt.Sprintf("push token longer than %d bytes", MaxPushTokenLen), false))
			return
		}
		if g.profile.pb.PushTokens == nil {
			g.profile.pb.PushTokens = make(map[uint32]string)
		}
		if tok == "" {
			delete(g.profile.pb.PushTokens, msg.DeviceId)
		} else {
			g.profile.pb.PushTokens[msg.DeviceId] = tok
		}
	default:
		fail(codeError(courierpb.ErrorCode_INVALID_ARGUMENT, "settings request names no operation", false))
		return
	}
	if err := g.saveProfile(); err != nil {
		g.logger().Warn("saving settings failed", "err", err)
		fail(storeError(err))
		return
	}
	g.presenceVisibilityChanged(all, reevaluate)
	ctx.Respond(&courierpb.UserSettingsReply{Contacts: g.profile.contactList(), PresenceVisibility: g.profile.pb.PresenceVisibility})
}

// updateContacts applies one ContactsUpdate: handles are resolved and user
// ids checked in the store, so a contact is always a real user. It returns
// the user ids whose contact status changed.
func (g *userGrain) updateContacts(u *courierpb.ContactsUpdate) ([]string, *courierpb.Error) {
	if n := len(u.AddUserIds) + len(u.AddHandles) + len(u.RemoveUserIds); n == 0 || n > MaxContactsBatch {
		return nil, codeError(courierpb.ErrorCode_INVALID_ARGUMENT, fmt.Sprintf("a contacts update changes 1..%d contacts", MaxContactsBatch), false)
	}
	ctx, cancel := g.storeCtx()
	defer cancel()
	add := make(map[string]string)
	for _, id := range u.AddUserIds {
		usr, err := g.deps.Store.GetUser(ctx, id)
		switch {
		case errors.Is(err, persistence.ErrNotFound):
			return nil, codeError(courierpb.ErrorCode_NOT_FOUND, "no user "+id, false)
		case err != nil:
			return nil, storeError(err)
		}
		add[id] = usr.Handle
	}
	for _, h := range u.AddHandles {
		usr, err := g.deps.Store.GetUserByHandle(ctx, h)
		switch {
		case errors.Is(err, persistence.ErrNotFound):
			return nil, codeError(courierpb.ErrorCode_NOT_FOUND, "no user with handle "+h, false)
		case err != nil:
			return nil, storeError(err)
		}
		add[usr.ID] = usr.Handle
	}
	delete(add, g.id)
	var changed []string
	for id, h := range add {
		if _, ok := g.profile.contacts[id]; !ok {
			if len(g.profile.contacts) >= MaxContacts {
				return nil, codeError(courierpb.ErrorCode_INVALID_ARGUMENT, fmt.Sprintf("at most %d contacts", MaxContacts), false)
			}
			changed = append(changed, id)
		}
		g.profile.setContact(id, h)
	}
	for _, id := range u.RemoveUserIds {
		if _, ok := g.profile.contacts[id]; ok {
			delete(g.profile.contacts, id)
			changed = append(changed, id)
		}
	}
	return changed, nil
}
