package client

import (
	"context"
	"fmt"
	"time"

	"github.com/courier-im/courier/protos/courierpb"
)

// Visibility says who sees a user's online state and last seen.
type Visibility = courierpb.Visibility

// Presence visibilities. Nobody is reciprocal: a user who hides its own
// presence sees nobody's.
const (
	VisibleToEveryone = courierpb.Visibility_VISIBILITY_EVERYONE
	VisibleToContacts = courierpb.Visibility_VISIBILITY_CONTACTS
	VisibleToNobody   = courierpb.Visibility_VISIBILITY_NOBODY
)

// Contacts is the user's contact list and block list.
type Contacts struct {
	Contacts []*courierpb.Contact
	Blocked  []string
}

// PresenceEvent is a presence change of a user this client subscribed to.
// Gone means the server will not tell this user anything more about that
// user's presence (privacy changed, or blocked): show nothing.
type PresenceEvent struct {
	UserID   string
	Online   bool
	LastSeen time.Time // zero when online or never seen
	Gone     bool
}

// TypingEvent is someone typing (or pausing) in a 1:1 chat with this user
// or in a group (GroupID set). Indicators are never stored: a client shows
// one until PAUSED arrives or a few seconds pass (WhatsApp: ~25 s).
type TypingEvent struct {
	FromUserID   string
	FromDeviceID uint32
	GroupID      string
	Typing       bool
}

// ephemeralBuffer is how many presence or typing events wait for the
// application; beyond it they are dropped (they are superseded anyway).
const ephemeralBuffer = 256

// Presence delivers presence events of subscribed users.
func (c *Client) Presence() <-chan PresenceEvent { return c.presence }

// Typing delivers typing indicators addressed to this user.
func (c *Client) Typing() <-chan TypingEvent { return c.typing }

func (c *Client) onPresence(u *courierpb.PresenceUpdate) {
	ev := PresenceEvent{UserID: u.UserId, Online: u.Online}
	if u.LastSeenMs > 0 {
		ev.LastSeen = time.UnixMilli(u.LastSeenMs)
	}
	c.offerPresence(ev)
}

func (c *Client) offerPresence(ev PresenceEvent) {
	select {
	case c.presence <- ev:
	default:
	}
}

func (c *Client) onTyping(n *courierpb.TypingNotice) {
	select {
	case c.typing <- TypingEvent{FromUserID: n.FromUserId, FromDeviceID: n.FromDeviceId, GroupID: n.GroupId,
		Typing: n.State == courierpb.TypingState_TYPING_STATE_TYPING}:
	default:
	}
}

// settingsCall sends one settings frame and returns the contact list the
// server answered with (nil for ok answers).
func (c *Client) settingsCall(ctx context.Context, what string, body any) (*courierpb.ContactList, error) {
	cl := c.start(ctx, body, true)
	<-cl.done
	if cl.err != nil {
		return nil, fmt.Errorf("%s: %w", what, cl.err)
	}
	return cl.res.GetContactList(), nil
}

func contactsOf(l *courierpb.ContactList) Contacts {
	return Contacts{Contacts: l.GetContacts(), Blocked: l.GetBlockedUserIds()}
}

// AddContacts adds users (by id) to the contact list.
func (c *Client) AddContacts(ctx context.Context, userIDs ...string) (Contacts, error) {
	l, err := c.settingsCall(ctx, "add contacts", &courierpb.ClientFrame_ContactsUpdate{ContactsUpdate: &courierpb.ContactsUpdate{AddUserIds: userIDs}})
	return contactsOf(l), err
}

// AddContactsByHandle adds users by handle.
func (c *Client) AddContactsByHandle(ctx context.Context, handles ...string) (Contacts, error) {
	l, err := c.settingsCall(ctx, "add contacts", &courierpb.ClientFrame_ContactsUpdate{ContactsUpdate: &courierpb.ContactsUpdate{AddHandles: handles}})
	return contactsOf(l), err
}

// RemoveContacts removes users from the contact list.
func (c *Client) RemoveContacts(ctx context.Context, userIDs ...string) (Contacts, error) {
	l, err := c.settingsCall(ctx, "remove contacts", &courierpb.ClientFrame_ContactsUpdate{ContactsUpdate: &courierpb.ContactsUpdate{RemoveUserIds: userIDs}})
	return contactsOf(l), err
}

// ListContacts returns the contact and block lists.
func (c *Client) ListContacts(ctx context.Context) (Contacts, error) {
	l, err := c.settingsCall(ctx, "list contacts", &courierpb.ClientFrame_Contacts{Contacts: &courierpb.ContactsRequest{}})
	return contactsOf(l), err
}

// Block stops a user's messages, typing and presence requests from reaching
// this user; the blocked user is not told (its messages get a single tick).
func (c *Client) Block(ctx context.Context, userID string) error {
	_, err := c.settingsCall(ctx, "block", &courierpb.ClientFrame_Block{Block: &courierpb.BlockUpdate{UserId: userID, Blocked: true}})
	return err
}

// Unblock lets a blocked user's new messages through again.
func (c *Client) Unblock(ctx context.Context, userID string) error {
	_, err := c.settingsCall(ctx, "unblock", &courierpb.ClientFrame_Block{Block: &courierpb.BlockUpdate{UserId: userID, Blocked: false}})
	return err
}

// SetPresenceVisibility chooses who sees this user's online state and last
// seen.
func (c *Client) SetPresenceVisibility(ctx context.Context, v Visibility) error {
	_, err := c.settingsCall(ctx, "set presence visibility", &courierpb.ClientFrame_Privacy{Privacy: &courierpb.PrivacyUpdate{Presence: v}})
	return err
}

// SetPushToken registers this device's push token; "" unregisters it. The
// server then sends one content-free push per offline period when the
// device's inbox gets something.
func (c *Client) SetPushToken(ctx context.Context, token string) error {
	_, err := c.settingsCall(ctx, "set push token", &courierpb.ClientFrame_PushToken{PushToken: &courierpb.PushTokenUpdate{Token: token}})
	return err
}

// SubscribePresence asks for the presence of users (the chats open on
// screen). Events arrive on Presence(); the subscription survives
// reconnects (the client renews it on every new session).
func (c *Client) SubscribePresence(ctx context.Context, userIDs ...string) error {
	c.mu.Lock()
	for _, id := range userIDs {
		c.presenceSubs[id] = true
	}
	c.mu.Unlock()
	_, err := c.settingsCall(ctx, "subscribe presence", &courierpb.ClientFrame_PresenceSubscribe{PresenceSubscribe: &courierpb.PresenceSubscribe{UserIds: userIDs}})
	return err
}

// UnsubscribePresence ends presence subscriptions.
func (c *Client) UnsubscribePresence(ctx context.Context, userIDs ...string) error {
	c.mu.Lock()
	for _, id := range userIDs {
		delete(c.presenceSubs, id)
	}
	c.mu.Unlock()
	_, err := c.settingsCall(ctx, "unsubscribe presence", &courierpb.ClientFrame_PresenceUnsubscribe{PresenceUnsubscribe: &courierpb.PresenceUnsubscribe{UserIds: userIDs}})
	return err
}

// resubscribePresence renews this client's subscriptions on a new session
// (the server keeps them per connection).
func (c *Client) resubscribePresence(cn *conn) {
	c.mu.Lock()
	ids := make([]string, 0, len(c.presenceSubs))
	for id := range c.presenceSubs {
		ids = append(ids, id)
	}
	c.mu.Unlock()
	for len(ids) > 0 {
		n := min(len(ids), 256)
		_ = cn.write(&courierpb.ClientFrame{ReqId: c.nextReq.Add(1), Body: &courierpb.ClientFrame_PresenceSubscribe{
			PresenceSubscribe: &courierpb.PresenceSubscribe{UserIds: ids[:n]}}})
		ids = ids[n:]
	}
}

// SendTyping tells a user that this user is typing (true) or stopped
// (false). Best effort: no answer, never stored.
func (c *Client) SendTyping(toUserID string, typing bool) error {
	return c.sendTyping(&courierpb.Typing{ToUserId: toUserID, State: typingState(typing)})
}

// SendGroupTyping is SendTyping to every other member of a group.
func (c *Client) SendGroupTyping(groupID string, typing bool) error {
	return c.sendTyping(&courierpb.Typing{GroupId: groupID, State: typingState(typing)})
}

func typingState(typing bool) courierpb.TypingState {
	if typing {
		return courierpb.TypingState_TYPING_STATE_TYPING
	}
	return courierpb.TypingState_TYPING_STATE_PAUSED
}

func (c *Client) sendTyping(t *courierpb.Typing) error {
	c.mu.Lock()
	cn := c.cur
	c.mu.Unlock()
	if cn == nil || !c.connected.Load() {
		return fmt.Errorf("typing: %w", ErrNotConnected)
	}
	return cn.write(&courierpb.ClientFrame{ReqId: c.nextReq.Add(1), Body: &courierpb.ClientFrame_Typing{Typing: t}})
}
