package client

// OnRetry sets a hook told of each attempt that is sent again, before
// the client uses c.
func OnRetry(c *Client, f func(attempt int, err error)) { c.onRetry = f }

// Encode encodes a request as the client sends it.
func Encode(req any) ([]byte, error) { return encode(req) }

// TooLate is tooLate, and MinAttempt minAttempt.
var TooLate, MinAttempt = tooLate, minAttempt
