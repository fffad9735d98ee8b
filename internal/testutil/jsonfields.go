package testutil

import (
	"reflect"
	"strings"
)

// JSONField is a field of a struct as encoding/json sees it.
type JSONField struct {
	// Name is the field's JSON name.
	Name string
	// Type is the field's Go type.
	Type reflect.Type
}

// JSONFields returns the JSON fields of struct type t, in order, with the
// fields of embedded structs without a tag of their own promoted into t's,
// as encoding/json does. A field tagged "-" is left out.
func JSONFields(t reflect.Type) []JSONField {
	var out []JSONField
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		if tag == "-" || !f.IsExported() && !f.Anonymous {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			out = append(out, JSONFields(f.Type)...)
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, JSONField{Name: name, Type: f.Type})
	}
	return out
}
