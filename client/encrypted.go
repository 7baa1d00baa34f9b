package client

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/courier-im/courier/client/e2ee"
	"github.com/courier-im/courier/protos/courierpb"
)

// End-to-end encryption in the SDK. With WithE2EE the API stays
// plaintext-in, plaintext-out: Send and SendGroup take plaintext, encrypt
// it for every device of the recipient (and every other device of the
// sender, as a sent transcript) with the Signal protocol, and Entries
// carry the decrypted Plaintext. The server only ever sees ciphertext.

// Tuning of the key directory as the SDK uses it.
const (
	// prekeyBatch is how many one-time prekeys are uploaded at a time.
	prekeyBatch = 100
	// prekeyRefill: at connect, a device with fewer than this many on the
	// server uploads another batch.
	prekeyRefill = 20
	// skdmContentType marks a 1:1 message that carries a group sender key
	// (handled inside the SDK, never shown to the application).
	skdmContentType = "application/x-courier-sender-key"
	// skdmIDPrefix starts the client_msg_id of every sender-key message, so
	// any device of the sender knows their receipts are not about anything
	// the user sent.
	skdmIDPrefix = "skdm-"
	// mismatchRetries bounds resends after MISMATCHED_DEVICES.
	mismatchRetries = 3
)

// ErrNoKeys: the recipient has no device with end-to-end encryption keys.
var ErrNoKeys = errors.New("recipient has no device with encryption keys")

// WithE2EE turns on end-to-end encryption with the device's key file at
// path (created with a fresh identity on first use; keep it: it is the
// device's identity and sessions).
func WithE2EE(path string) Option { return func(o *config) { o.e2eeFile = path } }

// encryption is the per-Client E2EE state next to the e2ee.Device.
type encryption struct {
	dev *e2ee.Device

	mu      sync.Mutex
	devices map[string][]uint32 // user → devices the last bundles named
	epochs  map[string]uint64   // group → current sender-key epoch
}

// Device is the client's end-to-end encryption device (nil without
// WithE2EE).
func (c *Client) Device() *e2ee.Device {
	if c.enc == nil {
		return nil
	}
	return c.enc.dev
}

func openEncryption(path string, creds Credentials) (*encryption, error) {
	dev, err := e2ee.Open(path, creds.UserID, creds.DeviceID)
	if err != nil {
		return nil, fmt.Errorf("open key file: %w", err)
	}
	return &encryption{dev: dev, devices: make(map[string][]uint32), epochs: make(map[string]uint64)}, nil
}

// publishKeys makes sure the server has this device's keys and enough
// one-time prekeys.
func (c *Client) publishKeys(ctx context.Context) error {
	var count struct {
		OneTimePrekeys int `json:"one_time_prekeys"`
	}
	if err := c.api(ctx, http.MethodGet, "/v1/keys", nil, &count); err != nil {
		return fmt.Errorf("count prekeys: %w", err)
	}
	n := 0
	if count.OneTimePrekeys < prekeyRefill {
		n = prekeyBatch
	}
	return c.uploadKeys(ctx, n)
}

// publishAtRegistration creates the key file of a device that was just
// registered or linked and publishes its keys, when opts ask for E2EE.
func publishAtRegistration(ctx context.Context, creds Credentials, opts []Option) error {
	cfg, err := buildConfig(opts)
	if err != nil || cfg.e2eeFile == "" {
		return err
	}
	dev, err := e2ee.Open(cfg.e2eeFile, creds.UserID, creds.DeviceID)
	if err != nil {
		return fmt.Errorf("open key file: %w", err)
	}
	defer dev.Close()
	up, err := dev.KeyUpload(prekeyBatch)
	if err != nil {
		return fmt.Errorf("make keys: %w", err)
	}
	body, err := protojson.Marshal(up)
	if err != nil {
		return err
	}
	tokens := &tokenSource{hc: cfg.httpClient, creds: creds, now: time.Now}
	tok, err := tokens.get(ctx, creds.BaseURL)
	if err != nil {
		return err
	}
	if err := doJSON(ctx, cfg.httpClient, http.MethodPut, creds.BaseURL+"/v1/keys", tok, rawJSON(body), nil); err != nil {
		return fmt.Errorf("upload keys: %w", err)
	}
	return nil
}

// uploadKeys publishes the identity and signed prekey (always: the server
// may have lost or never had them) and n new one-time prekeys.
func (c *Client) uploadKeys(ctx context.Context, n int) error {
	up, err := c.enc.dev.KeyUpload(n)
	if err != nil {
		return fmt.Errorf("make keys: %w", err)
	}
	body, err := protojson.Marshal(up)
	if err != nil {
		return err
	}
	if err := c.api(ctx, http.MethodPut, "/v1/keys", rawJSON(body), nil); err != nil {
		return fmt.Errorf("upload keys: %w", err)
	}
	return nil
}

// bundles fetches a user's device bundles (consuming one one-time prekey of
// each device); the caller's own device is never among them.
func (c *Client) bundles(ctx context.Context, userID string) (map[uint32]*courierpb.DeviceBundle, error) {
	var raw rawJSON
	if err := c.api(ctx, http.MethodGet, "/v1/keys/"+userID, nil, &raw); err != nil {
		return nil, fmt.Errorf("fetch bundles of %s: %w", userID, err)
	}
	var ub courierpb.UserBundles
	if err := protojson.Unmarshal(raw, &ub); err != nil {
		return nil, fmt.Errorf("decode bundles of %s: %w", userID, err)
	}
	out := make(map[uint32]*courierpb.DeviceBundle, len(ub.Devices))
	for _, b := range ub.Devices {
		out[b.DeviceId] = b
	}
	return out, nil
}

// encryptFor encrypts plaintext for every device of userID (but the
// caller's own), setting up sessions from fresh bundles where needed.
func (c *Client) encryptFor(ctx context.Context, userID string, plaintext []byte) ([]*courierpb.DeviceCiphertext, error) {
	enc := c.enc
	enc.mu.Lock()
	devs, known := enc.devices[userID]
	enc.mu.Unlock()
	var bundles map[uint32]*courierpb.DeviceBundle
	needBundles := !known
	for _, d := range devs {
		if !enc.dev.HasSession(userID, d) {
			needBundles = true
		}
	}
	if needBundles {
		var err error
		if bundles, err = c.bundles(ctx, userID); err != nil {
			return nil, err
		}
		devs = devs[:0:0]
		for d := range bundles {
			devs = append(devs, d)
		}
		enc.mu.Lock()
		enc.devices[userID] = devs
		enc.mu.Unlock()
	}
	out := make([]*courierpb.DeviceCiphertext, 0, len(devs))
	for _, d := range devs {
		var b *courierpb.DeviceBundle
		if !enc.dev.HasSession(userID, d) {
			b = bundles[d]
		}
		ct, err := enc.dev.Encrypt(userID, d, b, plaintext)
		if err != nil {
			return nil, fmt.Errorf("encrypt for %s/%d: %w", userID, d, err)
		}
		out = append(out, &courierpb.DeviceCiphertext{DeviceId: d, Ciphertext: ct})
	}
	return out, nil
}

// seal fills s with ciphertexts of plaintext for the recipient's devices and
// the sender's other devices.
func (c *Client) seal(ctx context.Context, s *courierpb.Send, plaintext []byte) error {
	rcpt, err := c.encryptFor(ctx, s.ToUserId, plaintext)
	if err != nil {
		return err
	}
	if len(rcpt) == 0 {
		return fmt.Errorf("send to %s: %w", s.ToUserId, ErrNoKeys)
	}
	own, err := c.encryptFor(ctx, c.creds.UserID, plaintext)
	if err != nil {
		return err
	}
	s.Ciphertext, s.PerDevice, s.SenderDevices = nil, rcpt, own
	return nil
}

// forgetDevices drops what the client believed about a user's devices after
// the server said it was stale: extra devices lose their sessions, and the
// next send fetches fresh bundles.
func (c *Client) forgetDevices(m *courierpb.MismatchedDevices) {
	enc := c.enc
	enc.mu.Lock()
	delete(enc.devices, m.GetUserId())
	enc.mu.Unlock()
	for _, d := range m.GetExtra() {
		_ = enc.dev.ResetSession(m.GetUserId(), d)
	}
}

// mismatch returns the server's device-set complaint in err, if it is one.
func mismatch(err error) (*courierpb.MismatchedDevices, bool) {
	var e *Error
	if errors.As(err, &e) && e.Code == courierpb.ErrorCode_MISMATCHED_DEVICES && e.Mismatch != nil {
		return e.Mismatch, true
	}
	return nil, false
}

// sendEncrypted is SendAsync with encryption: it seals the message now (so
// sends started in order are written in order) and, when the server says a
// device set was stale, re-seals for the current devices and resends with
// the same client_msg_id when the result is read.
func (c *Client) sendEncrypted(ctx context.Context, s *courierpb.Send, plaintext []byte, fresh bool) *PendingSend {
	p := &PendingSend{id: s.ClientMsgId}
	start := func() {
		if err := c.seal(ctx, s, plaintext); err != nil {
			p.cl = failedCall(err)
			return
		}
		p.cl = c.startCall(ctx, &courierpb.ClientFrame_Send{Send: s}, true, fresh)
		// A resend after MISMATCHED_DEVICES may find the message already
		// stored for the recipient (only the sender's devices were stale).
		fresh = false
	}
	start()
	attempts := 0
	p.resend = func() bool {
		m, ok := mismatch(p.cl.err)
		if !ok || attempts >= mismatchRetries {
			return false
		}
		attempts++
		c.forgetDevices(m)
		start()
		return true
	}
	return p
}

func failedCall(err error) *call {
	cl := &call{frame: &courierpb.ClientFrame{}, done: make(chan struct{}), err: err}
	close(cl.done)
	return cl
}

// skdm is the plaintext of a sender-key message: which group and epoch the
// distribution is for.
func encodeSKDM(groupID string, epoch uint64, dist []byte) []byte {
	b := binary.AppendUvarint(nil, uint64(len(groupID)))
	b = append(b, groupID...)
	b = binary.AppendUvarint(b, epoch)
	return append(b, dist...)
}

func decodeSKDM(b []byte) (groupID string, epoch uint64, dist []byte, err error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return "", 0, nil, errors.New("malformed sender key message")
	}
	groupID, b = string(b[k:k+int(n)]), b[k+int(n):]
	epoch, k = binary.Uvarint(b)
	if k <= 0 {
		return "", 0, nil, errors.New("malformed sender key message")
	}
	return groupID, epoch, b[k:], nil
}

// open decrypts an entry for the application. It reports false for entries
// the SDK consumes itself (sender keys).
func (c *Client) open(e *Entry) bool {
	if c.enc == nil {
		return true
	}
	dev := c.enc.dev
	switch e.Kind {
	case courierpb.EntryKind_ENTRY_KIND_MESSAGE:
		e.Plaintext, e.DecryptErr = dev.Decrypt(e.FromUserID, e.FromDeviceID, e.Ciphertext)
		if e.ContentType == skdmContentType {
			if e.DecryptErr == nil {
				e.DecryptErr = c.takeSenderKey(e.FromUserID, e.FromDeviceID, e.Plaintext)
			}
			if e.DecryptErr != nil {
				c.log.Warn("courier: sender key message unusable", "from", e.FromUserID, "err", e.DecryptErr)
			}
			return false
		}
	case courierpb.EntryKind_ENTRY_KIND_SENT_TRANSCRIPT:
		if e.ContentType == skdmContentType {
			return false // another device of ours handed out a sender key
		}
		e.Plaintext, e.DecryptErr = dev.Decrypt(e.FromUserID, e.FromDeviceID, e.Ciphertext)
	case courierpb.EntryKind_ENTRY_KIND_DELIVERED, courierpb.EntryKind_ENTRY_KIND_READ:
		// Receipts of sender-key messages are the SDK's business only.
		e.ReceiptFor = slices.DeleteFunc(slices.Clone(e.ReceiptFor), func(id string) bool {
			return strings.HasPrefix(id, skdmIDPrefix)
		})
		return len(e.ReceiptFor) > 0
	case courierpb.EntryKind_ENTRY_KIND_GROUP_MESSAGE:
		e.Plaintext, e.DecryptErr = dev.GroupDecrypt(e.GroupID, e.SenderKeyEpoch, e.FromUserID, e.FromDeviceID, e.Ciphertext)
	case courierpb.EntryKind_ENTRY_KIND_GROUP_EVENT:
		// Membership changed: the next group send uses the new epoch.
		c.enc.mu.Lock()
		delete(c.enc.epochs, e.GroupID)
		c.enc.mu.Unlock()
	case courierpb.EntryKind_ENTRY_KIND_PREKEYS_LOW:
		c.refillPrekeys()
	}
	return true
}

func (c *Client) takeSenderKey(fromUser string, fromDevice uint32, pt []byte) error {
	groupID, epoch, dist, err := decodeSKDM(pt)
	if err != nil {
		return err
	}
	return c.enc.dev.ProcessDistribution(groupID, epoch, fromUser, fromDevice, dist)
}

// refillPrekeys uploads another batch in the background; the Client's
// wait group owns the goroutine.
func (c *Client) refillPrekeys() {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.requestTimeout)
		defer cancel()
		if err := c.uploadKeys(ctx, prekeyBatch); err != nil {
			c.log.Warn("courier: refilling one-time prekeys failed", "err", err)
		}
	}()
}

// groupEpoch returns the group's current sender-key epoch.
func (c *Client) groupEpoch(ctx context.Context, groupID string, fresh bool) (uint64, error) {
	c.enc.mu.Lock()
	ep, ok := c.enc.epochs[groupID]
	c.enc.mu.Unlock()
	if ok && !fresh {
		return ep, nil
	}
	info, err := c.GroupInfo(ctx, groupID)
	if err != nil {
		return 0, err
	}
	c.enc.mu.Lock()
	c.enc.epochs[groupID] = info.SenderKeyEpoch
	c.enc.mu.Unlock()
	return info.SenderKeyEpoch, nil
}

// sendGroupEncrypted encrypts plaintext under this device's sender key for
// the group's current epoch. A new key (first message of an epoch) is
// first distributed to every other member over pairwise sessions; members
// it could not reach (no published keys yet) are recorded in the key file
// and get the key before a later message of the epoch once they have keys.
// A send refused as SENDER_KEY_STALE (the membership changed meanwhile)
// rotates to the new epoch and is resent with the same client_msg_id.
func (c *Client) sendGroupEncrypted(ctx context.Context, gs *courierpb.GroupSend, plaintext []byte, first bool) (SendResult, error) {
	fresh := false
	for attempt := 0; ; attempt++ {
		epoch, err := c.groupEpoch(ctx, gs.GroupId, fresh)
		if err != nil {
			return SendResult{ClientMsgID: gs.ClientMsgId}, err
		}
		// Before encrypting: a distribution carries the chain's position,
		// and the late members must be able to read this very message.
		if err := c.catchUpDistribution(ctx, gs.GroupId, epoch); err != nil {
			return SendResult{ClientMsgID: gs.ClientMsgId}, err
		}
		ct, dist, err := c.enc.dev.GroupEncrypt(gs.GroupId, epoch, plaintext)
		if err != nil {
			return SendResult{ClientMsgID: gs.ClientMsgId}, fmt.Errorf("group encrypt: %w", err)
		}
		if dist != nil {
			if err := c.distribute(ctx, gs.GroupId, epoch, dist, nil); err != nil {
				return SendResult{ClientMsgID: gs.ClientMsgId}, err
			}
		}
		send := &courierpb.GroupSend{GroupId: gs.GroupId, ClientMsgId: gs.ClientMsgId, ContentType: gs.ContentType,
			Ciphertext: ct, SenderKeyEpoch: epoch}
		res, err := c.groupSendFrame(ctx, send, first && attempt == 0).Result()
		var e *Error
		if errors.As(err, &e) && e.Code == courierpb.ErrorCode_SENDER_KEY_STALE && attempt < mismatchRetries {
			fresh = true
			continue
		}
		return res, err
	}
}

// catchUpDistribution hands this device's sender key of (group, epoch) to
// the members an earlier distribution could not reach.
func (c *Client) catchUpDistribution(ctx context.Context, groupID string, epoch uint64) error {
	late, err := c.enc.dev.Undistributed(groupID, epoch)
	if err != nil || len(late) == 0 {
		return err
	}
	dist, err := c.enc.dev.GroupDistribution(groupID, epoch)
	if errors.Is(err, e2ee.ErrNoSenderKey) {
		return nil // the next GroupEncrypt makes a key and distributes it to all
	}
	if err != nil {
		return err
	}
	return c.distribute(ctx, groupID, epoch, dist, late)
}

// distribute sends this device's sender key for (group, epoch) to the
// given members (nil: every other member), each as an end-to-end
// encrypted 1:1 message, and records whom it could not reach because they
// have no keys.
func (c *Client) distribute(ctx context.Context, groupID string, epoch uint64, dist []byte, to []string) error {
	if to == nil {
		members, err := c.GroupMembers(ctx, groupID)
		if err != nil {
			return fmt.Errorf("distribute sender key: %w", err)
		}
		for _, m := range members {
			if m.UserID != c.creds.UserID {
				to = append(to, m.UserID)
			}
		}
	}
	pt := encodeSKDM(groupID, epoch, dist)
	pending := make([]*PendingSend, len(to))
	for i, u := range to {
		pending[i] = c.SendAsync(ctx, u, pt, WithContentType(skdmContentType), WithClientMsgID(skdmIDPrefix+newMsgID()))
	}
	var missed []string
	for i, p := range pending {
		_, err := p.Result()
		switch {
		case errors.Is(err, ErrNoKeys):
			missed = append(missed, to[i])
		case err != nil:
			return fmt.Errorf("distribute sender key: %w", err)
		}
	}
	return c.enc.dev.SetUndistributed(groupID, epoch, missed)
}

// rawJSON passes pre-encoded JSON through the client's JSON helpers.
type rawJSON []byte

func (r rawJSON) MarshalJSON() ([]byte, error) { return r, nil }

func (r *rawJSON) UnmarshalJSON(b []byte) error {
	*r = append((*r)[:0], b...)
	return nil
}
