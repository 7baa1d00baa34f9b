package cluster

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/courier-im/courier/protos/clusterpb"
)

// Peers only ever exchange *clusterpb.Envelope (linked into every binary):
// Proto.Actor's serializer crashes the receiving process on a protobuf type
// it does not know, so a type a newer node added must arrive as bytes plus a
// name that this node can refuse.
//
// The decodable types are an explicit allow-list (RegisterMessages), not the
// whole protobuf registry, so a peer cannot make a node instantiate arbitrary
// linked types.

// types is copy-on-write: registration happens at start-up, lookups on every
// cross-node message.
var types struct {
	mu sync.Mutex
	m  atomic.Pointer[map[protoreflect.FullName]protoreflect.MessageType]
}

func registerMessages(msgs ...proto.Message) {
	types.mu.Lock()
	defer types.mu.Unlock()
	next := make(map[protoreflect.FullName]protoreflect.MessageType)
	if old := types.m.Load(); old != nil {
		for k, v := range *old {
			next[k] = v
		}
	}
	for _, msg := range msgs {
		if msg == nil {
			continue
		}
		mt := msg.ProtoReflect().Type()
		next[mt.Descriptor().FullName()] = mt
	}
	types.m.Store(&next)
}

func lookupType(name string) protoreflect.MessageType {
	m := types.m.Load()
	if m == nil {
		return nil
	}
	return (*m)[protoreflect.FullName(name)]
}

func typeName(msg proto.Message) string { return string(msg.ProtoReflect().Descriptor().FullName()) }

// encodePayload wraps msg for the wire (kind and identity are the caller's).
func encodePayload(msg proto.Message) (*clusterpb.Envelope, error) {
	b, err := proto.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("%w: marshal %T: %v", ErrBadEnvelope, msg, err)
	}
	return &clusterpb.Envelope{TypeName: typeName(msg), Payload: b}, nil
}

func decodePayload(name string, payload []byte) (proto.Message, error) {
	mt := lookupType(name)
	if mt == nil {
		return nil, fmt.Errorf("%w: %q is not registered on this node", ErrUnknownType, name)
	}
	msg := mt.New().Interface()
	if err := proto.Unmarshal(payload, msg); err != nil {
		return nil, fmt.Errorf("%w: decode %s: %v", ErrBadEnvelope, name, err)
	}
	return msg, nil
}

// failure is how the cluster layer answers a local request it could not
// deliver. It is not a protobuf type, so it never crosses nodes: relays
// turn it into an Envelope status first.
type failure struct{ err error }

// Internal causes; all wrap a public sentinel.
var (
	errWrongOwner = fmt.Errorf("%w: this node does not own the grain", ErrUnavailable)
	errStopping   = fmt.Errorf("%w: node is shutting down", ErrUnavailable)
	errNotStarted = fmt.Errorf("%w: node not started", ErrUnavailable)
)

func statusOf(err error) *clusterpb.Status {
	code := clusterpb.StatusCode_STATUS_UNAVAILABLE
	switch {
	case errors.Is(err, errWrongOwner):
		code = clusterpb.StatusCode_STATUS_WRONG_OWNER
	case errors.Is(err, ErrUnknownType):
		code = clusterpb.StatusCode_STATUS_UNKNOWN_TYPE
	case errors.Is(err, ErrUnknownKind):
		code = clusterpb.StatusCode_STATUS_UNKNOWN_KIND
	case errors.Is(err, ErrBadEnvelope):
		code = clusterpb.StatusCode_STATUS_BAD_ENVELOPE
	}
	return &clusterpb.Status{Code: code, Message: err.Error()}
}

// statusError turns a peer's status back into an error wrapping the sentinel
// callers branch on.
func statusError(st *clusterpb.Status) error {
	var base error
	switch st.GetCode() {
	case clusterpb.StatusCode_STATUS_WRONG_OWNER:
		base = errWrongOwner
	case clusterpb.StatusCode_STATUS_UNKNOWN_TYPE:
		base = ErrUnknownType
	case clusterpb.StatusCode_STATUS_UNKNOWN_KIND:
		base = ErrUnknownKind
	case clusterpb.StatusCode_STATUS_BAD_ENVELOPE:
		base = ErrBadEnvelope
	default:
		base = ErrUnavailable
	}
	return fmt.Errorf("%w (peer: %s)", base, st.GetMessage())
}

// isLocal reports whether pid lives in this actor system.
func (c *Cluster) isLocal(pid *actor.PID) bool {
	return pid.Address == "nonhost" || pid.Address == c.system.Address()
}

// refuse answers a request the cluster layer could not deliver.
func (c *Cluster) refuse(sender *actor.PID, err error) {
	if sender == nil {
		return
	}
	if c.isLocal(sender) {
		c.system.Root.Send(sender, &failure{err: err})
		return
	}
	c.system.Root.Send(sender, &clusterpb.Envelope{Status: statusOf(err)})
}

// encodeReply turns whatever a grain (or the cluster layer) answered into
// the Envelope a peer gets back.
func encodeReply(m interface{}) *clusterpb.Envelope {
	switch r := m.(type) {
	case *failure:
		return &clusterpb.Envelope{Status: statusOf(r.err)}
	case *actor.DeadLetterResponse:
		return &clusterpb.Envelope{Status: &clusterpb.Status{
			Code: clusterpb.StatusCode_STATUS_UNAVAILABLE, Message: "grain stopped before answering"}}
	case proto.Message:
		env, err := encodePayload(r)
		if err != nil {
			return &clusterpb.Envelope{Status: statusOf(err)}
		}
		return env
	default:
		return &clusterpb.Envelope{Status: &clusterpb.Status{
			Code:    clusterpb.StatusCode_STATUS_BAD_ENVELOPE,
			Message: fmt.Sprintf("grain replied with non-protobuf %T", m)}}
	}
}

// tell: see Cluster.Tell.
func (c *Cluster) tell(pid *actor.PID, msg proto.Message) {
	if pid == nil || msg == nil {
		return
	}
	if c.isLocal(pid) {
		c.system.Root.Send(pid, msg)
		return
	}
	env, err := encodePayload(msg)
	if err != nil {
		c.log.Error("tell: dropping message", "to", pidString(pid), "error", err)
		return
	}
	c.system.Root.Send(pid, env)
}

func unwrapReceiver(next actor.ReceiverFunc) actor.ReceiverFunc {
	return func(ctx actor.ReceiverContext, me *actor.MessageEnvelope) {
		msg, ok := unwrapTell(ctx, me.Message)
		if !ok {
			return
		}
		if msg != me.Message {
			me = &actor.MessageEnvelope{Header: me.Header, Message: msg, Sender: me.Sender}
		}
		next(ctx, me)
	}
}

// unwrapTell decodes msg when it is the Envelope of a Tell from another
// node, and returns anything else as it is; false: drop it (logged).
func unwrapTell(ctx actor.ReceiverContext, msg any) (any, bool) {
	env, ok := msg.(*clusterpb.Envelope)
	if !ok || env.Kind != "" {
		return msg, true
	}
	if st := env.GetStatus(); st != nil && st.GetCode() != clusterpb.StatusCode_STATUS_OK {
		ctx.Logger().Warn("dropping envelope carrying a status", "actor", pidString(ctx.Self()),
			"code", st.GetCode().String(), "status", st.GetMessage())
		return nil, false
	}
	decoded, err := decodePayload(env.TypeName, env.Payload)
	if err != nil {
		// An older node receiving a newer type: drop it, never crash.
		ctx.Logger().Warn("dropping undecodable envelope", "actor", pidString(ctx.Self()),
			"type", env.TypeName, "error", err)
		return nil, false
	}
	return decoded, true
}
