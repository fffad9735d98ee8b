// Package jsonscan is the router's one strict JSON scanner. It reads a
// document front to back, straight into the caller's values, for the two
// decoders of outside input: KV events (events/codec) and route requests
// (service).
//
// Why not encoding/json: a route request carries thousands of token ids
// and a KV event hundreds of 64-bit hashes. encoding/json decodes a
// 3,840-token prompt in about 600 µs, a hundred times the routing decision
// itself, and is lenient where the router must be strict. A Scanner reads
// numbers in place, allocates only the strings a caller keeps, and is
// strict: keys are matched exactly by the caller (case included) and each
// caller rejects a known key given twice; strings are checked for control
// characters and escapes, and String also for valid UTF-8; integers must be
// integers (no fraction, no exponent, no leading zero) within the range the
// caller asks for; skipped values nest at most MaxDepth levels.
//
// The caller drives the Scanner through the shape it expects (Object, Key,
// Array, Elem, then a value method per field); there is no tree and no
// reflection. Every failure is an *Error whose Kind says whether the input
// is not JSON (Syntax), JSON of another shape (Type), a number the field
// does not take (Range) or over a limit (Limit), and whose Field names the
// field: callers map the Kind onto their own error reasons. CheckSyntax
// tells a caller whether a document that failed on its shape is JSON at
// all, so that the failure is reported as the worse of the two.
//
// A Scanner is a cursor over one document: it is not safe for concurrent
// use, and costs nothing to make, so each decode makes its own. The package
// starts no goroutines.
package jsonscan
