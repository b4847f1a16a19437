package nodemeter

import (
	"errors"
	"fmt"
)

// ReasonOversize is the reason of every size-limit error (Python's OversizeEventError).
const ReasonOversize = "oversize"

// InvalidUsageError is bad input refused at the call site. Reason is the same
// short code the Python SDK raises and the worker dead-letters with
// (docs/wire.md, "Errors at the SDK" and "Dead-letter reasons").
type InvalidUsageError struct {
	Reason  string
	Message string
}

func (e *InvalidUsageError) Error() string {
	return fmt.Sprintf("nodemeter: %s (%s)", e.Message, e.Reason)
}

// Oversize reports whether a size limit was broken (Python: OversizeEventError).
func (e *InvalidUsageError) Oversize() bool { return e.Reason == ReasonOversize }

// Is makes errors.Is(err, ErrInvalidUsage) true for every InvalidUsageError.
func (e *InvalidUsageError) Is(target error) bool { return target == ErrInvalidUsage }

// ErrInvalidUsage matches any *InvalidUsageError with errors.Is.
var ErrInvalidUsage = errors.New("nodemeter: invalid usage")

// ErrClosed is returned for records emitted after Close.
var ErrClosed = errors.New("nodemeter: meter closed")

// DeliveryError is a record the broker did not acknowledge for good. Flush and
// Close return them (joined); the record's key and value are kept so that the
// caller can resend them: the bytes and the event id are the same, so a resend
// is deduped by the worker.
type DeliveryError struct {
	Topic string
	Key   []byte
	Value []byte
	Err   error
}

func (e *DeliveryError) Error() string {
	return fmt.Sprintf("nodemeter: delivery of %q to %s failed: %v", e.Key, e.Topic, e.Err)
}

func (e *DeliveryError) Unwrap() error { return e.Err }

// ReasonOf returns the reason code of an *InvalidUsageError in err's chain, else "".
func ReasonOf(err error) string {
	var iu *InvalidUsageError
	if errors.As(err, &iu) {
		return iu.Reason
	}
	return ""
}

func bad(reason, format string, args ...any) *InvalidUsageError {
	return &InvalidUsageError{Reason: reason, Message: fmt.Sprintf(format, args...)}
}
