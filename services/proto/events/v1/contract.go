package eventsv1

// Where OrderPlaced travels and how a message says what it holds: the parts of the contract that are
// not the payload.
const (
	// OrdersStream is the JetStream stream holding orders' events.
	OrdersStream = "ORDERS"
	// OrdersSubjects are the subjects OrdersStream stores.
	OrdersSubjects = "orders.>"
	// OrderPlacedSubject is the subject of OrderPlaced events.
	OrderPlacedSubject = "orders.placed"
	// OrderPlacedType is the Meshplane-Event-Type header value of an OrderPlaced event: the message's
	// full protobuf name, version included.
	OrderPlacedType = "meshplane.events.v1.OrderPlaced"

	// DeadLetterStream holds the events consumers gave up on, each on deadletter.<consumer>.<subject>,
	// with the reason in the Meshplane-Dead-Letter-Reason header.
	DeadLetterStream = "DEADLETTER"
	// DeadLetterSubjects are the subjects DeadLetterStream stores.
	DeadLetterSubjects = "deadletter.>"
)

// Headers of an event message.
const (
	// HeaderEventType names the payload's protobuf message, e.g. OrderPlacedType.
	HeaderEventType = "Meshplane-Event-Type"
	// HeaderMsgID is JetStream's deduplication header: a message with an id the stream stored within
	// its duplicate window is acknowledged and not stored again. Producers set it to the event id.
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderTraceparent is the W3C trace context of the request that caused the event.
	HeaderTraceparent = "traceparent"
	// HeaderDeadLetterReason says why a consumer gave up on an event, on a dead-lettered copy.
	HeaderDeadLetterReason = "Meshplane-Dead-Letter-Reason"
	// HeaderDeliveries is how many times the consumer had received an event it dead-lettered.
	HeaderDeliveries = "Meshplane-Deliveries"
	// HeaderStreamSequence is the dead-lettered event's sequence number in its original stream.
	HeaderStreamSequence = "Meshplane-Stream-Sequence"
)

// DeadLetterSubject is where consumer puts the events of subject it gives up on.
func DeadLetterSubject(consumer, subject string) string {
	return "deadletter." + consumer + "." + subject
}
