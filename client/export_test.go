package client

// OnRetry sets a hook told of each mark attempt that is retried, before
// the client uses c.
func OnRetry(c *Client, f func(attempt int, err error)) { c.onRetry = f }
