package metrics

import (
	"fmt"
	"strings"
)

// SanitizeMetricName turns raw into a valid Prometheus metric name the way
// Dynamo's sanitize_prometheus_name does: every character outside
// [a-zA-Z0-9_:] becomes '_', and a name that starts with a digit gets a
// leading '_'. Double underscores stay, anywhere. It fails with
// ErrInvalidName when raw is empty or nothing but invalid characters.
//
// One deliberate difference: a leading ':' is kept, as Prometheus allows it,
// where Dynamo's regular expression would prefix it with '_'.
func SanitizeMetricName(raw string) (string, error) {
	s, err := sanitize(raw, isMetricNameChar)
	if err != nil {
		return "", fmt.Errorf("sanitize metric name %q: %w", raw, err)
	}
	return s, nil
}

// SanitizeLabelName turns raw into a valid label name the way Dynamo's
// sanitize_prometheus_label does: every character outside [a-zA-Z0-9_]
// becomes '_', a name that starts with a digit gets a leading '_', and a name
// that starts with "__" (reserved for Prometheus) loses its leading
// underscores. It fails with ErrInvalidName when raw is empty or nothing but
// invalid characters and underscores.
//
// One deliberate difference: Dynamo strips exactly two underscores, so
// "___x" becomes "__x", still reserved; here every leading underscore goes
// and the result is "x".
func SanitizeLabelName(raw string) (string, error) {
	s, err := sanitize(raw, isLabelNameChar)
	if err != nil {
		return "", fmt.Errorf("sanitize label name %q: %w", raw, err)
	}
	if strings.HasPrefix(s, "__") {
		s = strings.TrimLeft(s, "_")
		if isDigit(s[0]) {
			s = "_" + s
		}
	}
	return s, nil
}

// ValidLabelName reports whether name may be used as a label name as is:
// [a-zA-Z_][a-zA-Z0-9_]* and not starting with "__".
func ValidLabelName(name string) bool {
	s, err := SanitizeLabelName(name)
	return err == nil && s == name
}

// sanitize replaces every rune that keep rejects with '_' and prefixes a
// leading digit with '_'. A result of underscores only is ErrInvalidName.
func sanitize(raw string, keep func(byte) bool) (string, error) {
	if raw == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalidName)
	}
	var b strings.Builder
	b.Grow(len(raw) + 1)
	if isDigit(raw[0]) {
		b.WriteByte('_')
	}
	for _, r := range raw { // by rune: a multi-byte character becomes one '_'
		if r < 0x80 && keep(byte(r)) {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	s := b.String()
	if strings.Trim(s, "_") == "" {
		return "", fmt.Errorf("%w: no valid character", ErrInvalidName)
	}
	return s, nil
}

func isMetricNameChar(c byte) bool { return isLabelNameChar(c) || c == ':' }

func isLabelNameChar(c byte) bool {
	return c == '_' || isDigit(c) || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
