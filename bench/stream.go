package bench

// Correctness bookkeeping shared by the scenarios. A stream is one ordered
// flow of messages: one sender to one conversation. Senders number their
// messages per stream; every receiver of the conversation checks that it
// gets each acknowledged number once, in order.

// streamKey names a stream.
type streamKey struct {
	from int32 // the sender's user index
	conv int32 // the receiver's user index (1:1), or ^group index (groups)
}

func directConv(receiver int) int32 { return int32(receiver) }
func groupConv(group int) int32     { return ^int32(group) }
