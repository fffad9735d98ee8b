package httpapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/kvrouter/router/client"
	"github.com/kvrouter/router/httpapi"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/scheduler"
)

// docs/openapi.yaml is held to the handler and to the client package's wire types,
// both ways: every path and method it lists is served and every served
// path is listed; the statuses it lists for a path are exactly those the
// handler can answer there; every schema has exactly the fields of its Go
// type, of matching JSON types, nested objects included; every example
// decodes strictly into its type.

const specPath = "../docs/openapi.yaml"

// spec is docs/openapi.yaml, as generic JSON values.
type spec struct {
	doc map[string]any
}

func loadSpec(t testing.TB) spec {
	t.Helper()
	y, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	j, err := yaml.YAMLToJSON(y)
	if err != nil {
		t.Fatalf("%s: %v", specPath, err)
	}
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("%s: %v", specPath, err)
	}
	return spec{doc: doc}
}

// obj returns v[keys...] as an object, or nil.
func obj(v any, keys ...string) map[string]any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	m, _ := v.(map[string]any)
	return m
}

// resolve follows a local $ref.
func (s spec) resolve(v map[string]any) map[string]any {
	for v != nil {
		ref, ok := v["$ref"].(string)
		if !ok {
			return v
		}
		v = obj(s.doc, strings.Split(strings.TrimPrefix(ref, "#/"), "/")...)
	}
	return nil
}

// operation returns the POST operation of path, or nil.
func (s spec) operation(path string) map[string]any { return obj(s.doc, "paths", path, "post") }

// statuses returns the statuses documented for a request to path: its
// operation's, and those of x-transport-responses, which any request may
// get.
func (s spec) statuses(path string) []int {
	var out []int
	for _, rs := range []map[string]any{obj(s.operation(path), "responses"), obj(s.doc, "x-transport-responses", "responses")} {
		for k := range rs {
			n, err := strconv.Atoi(k)
			if err == nil {
				out = append(out, n)
			}
		}
	}
	slices.Sort(out)
	return out
}

// documents reports whether code is documented for a request to path.
func (s spec) documents(path string, code int) bool { return slices.Contains(s.statuses(path), code) }

// wire is what each endpoint takes and gives, as the client's Go types.
var wire = map[string]struct{ request, reply reflect.Type }{
	metrics.EndpointRoute:          {reflect.TypeFor[client.RouteRequest](), reflect.TypeFor[client.Decision]()},
	metrics.EndpointMarkPrefill:    {reflect.TypeFor[client.MarkPrefillRequest](), reflect.TypeFor[client.MarkReply]()},
	metrics.EndpointMarkFree:       {reflect.TypeFor[client.MarkFreeRequest](), reflect.TypeFor[client.MarkReply]()},
	metrics.EndpointOverlapScores:  {reflect.TypeFor[client.Prompt](), reflect.TypeFor[client.Overlaps]()},
	metrics.EndpointPotentialLoads: {reflect.TypeFor[client.Prompt](), reflect.TypeFor[client.Loads]()},
}

// codes are the error codes each endpoint can answer: route every one
// (the queue's, no_workers and overloaded from the choice, internal when
// the router closes or the client leaves the queue); the marks and the
// prompt queries only bad_request, since they never wait and never
// choose. The HTTP tests record every status they see and check it
// against the document, so a code missing here shows there.
var codes = map[string][]string{
	metrics.EndpointRoute: {scheduler.CodeBadRequest, scheduler.CodeNoWorkers, scheduler.CodeOverloaded, scheduler.CodeQueueFull,
		scheduler.CodeQueueRejected, scheduler.CodeTimeout, scheduler.CodeInternal},
	metrics.EndpointMarkPrefill:    {scheduler.CodeBadRequest},
	metrics.EndpointMarkFree:       {scheduler.CodeBadRequest},
	metrics.EndpointOverlapScores:  {scheduler.CodeBadRequest},
	metrics.EndpointPotentialLoads: {scheduler.CodeBadRequest},
}

// transport are the statuses of the HTTP layer: any request may get 404
// (no such path), 405 (another method) or 431 (headers too large, from
// net/http); a POST to an endpoint 413 (body too large), 415 (not JSON)
// and 400 (body unreadable).
var (
	anyRequest  = []int{http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusRequestHeaderFieldsTooLarge}
	anyEndpoint = []int{http.StatusOK, http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType}
)

func TestOpenAPIDocument(t *testing.T) {
	s := loadSpec(t)
	if v, _ := s.doc["openapi"].(string); !strings.HasPrefix(v, "3.") {
		t.Fatalf("openapi: %q, want an OpenAPI 3 document", v)
	}
	srv := fixedServer(t)

	t.Run("paths both ways", func(t *testing.T) {
		var documented []string
		for path, item := range obj(s.doc, "paths") {
			documented = append(documented, path)
			for method := range item.(map[string]any) {
				if method != "post" {
					t.Errorf("%s: method %s is documented; only POST is served", path, method)
				}
			}
		}
		slices.Sort(documented)
		if diff := cmp.Diff(srv.srv.Paths(), documented); diff != "" {
			t.Errorf("paths (-served +documented):\n%s", diff)
		}
		// What the handler does with each, and with paths it lacks.
		for _, path := range documented {
			if code := srv.status(http.MethodPost, path, "application/json", "{}"); code == http.StatusNotFound || code == http.StatusMethodNotAllowed {
				t.Errorf("POST %s: %d, want it served", path, code)
			}
			for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodOptions, http.MethodHead} {
				if code := srv.status(m, path, "", ""); code != http.StatusMethodNotAllowed {
					t.Errorf("%s %s: %d, want 405", m, path, code)
				}
			}
		}
		for _, path := range []string{"/", "/v1", "/v1/", "/v1/route/", "/v1/Route", "/v2/route", "/route", "/v1/nope", "/metrics"} {
			if code := srv.status(http.MethodPost, path, "application/json", "{}"); code != http.StatusNotFound {
				t.Errorf("POST %s: %d, want 404", path, code)
			}
		}
	})

	t.Run("statuses", func(t *testing.T) {
		for endpoint, cs := range codes {
			path := httpapi.PathPrefix + endpoint
			want := slices.Concat(anyRequest, anyEndpoint)
			for _, c := range cs {
				want = append(want, httpapi.Status(c))
			}
			slices.Sort(want)
			want = slices.Compact(want)
			if diff := cmp.Diff(want, s.statuses(path)); diff != "" {
				t.Errorf("%s statuses (-handler +documented):\n%s", path, diff)
			}
		}
	})

	t.Run("schemas", func(t *testing.T) {
		errorType := reflect.TypeFor[client.ErrorReply]()
		for endpoint, types := range wire {
			path := httpapi.PathPrefix + endpoint
			op := s.operation(path)
			if op == nil {
				t.Errorf("%s: no POST operation", path)
				continue
			}
			reqMedia := obj(op, "requestBody", "content", "application/json")
			req := s.resolve(obj(reqMedia, "schema"))
			s.compare(t, path+" request", req, types.request)
			if req["additionalProperties"] != false {
				t.Errorf("%s request: additionalProperties should be false: the decoder refuses unknown fields", path)
			}
			s.example(t, path+" request", reqMedia, types.request)
			for status, resp := range obj(op, "responses") {
				media := obj(s.resolve(resp.(map[string]any)), "content", "application/json")
				if media == nil {
					t.Errorf("%s %s: no application/json content", path, status)
					continue
				}
				typ := errorType
				if status == "200" {
					typ = types.reply
				}
				s.compare(t, path+" "+status, s.resolve(obj(media, "schema")), typ)
				s.example(t, path+" "+status, media, typ)
			}
		}
		for status, resp := range obj(s.doc, "x-transport-responses", "responses") {
			if media := obj(s.resolve(resp.(map[string]any)), "content", "application/json"); media != nil {
				s.compare(t, "x-transport-responses "+status, s.resolve(obj(media, "schema")), errorType)
			}
		}
	})
}

// compare checks that schema describes t: an object with exactly t's JSON
// fields, each of a matching JSON type, recursively.
func (s spec) compare(t *testing.T, where string, schema map[string]any, typ reflect.Type) {
	t.Helper()
	if schema == nil {
		t.Errorf("%s: no schema for %v", where, typ)
		return
	}
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	if alts, ok := schema["oneOf"].([]any); ok {
		// A nullable object: one alternative is the object, the other null.
		var object map[string]any
		for _, a := range alts {
			if r := s.resolve(a.(map[string]any)); r["type"] != "null" {
				object = r
			}
		}
		schema = object
	}
	types := schemaTypes(schema["type"])
	want := jsonType(typ)
	if !slices.Contains(types, want) {
		t.Errorf("%s: type %v, want %s for %v", where, types, want, typ)
		return
	}
	switch typ.Kind() {
	case reflect.Slice:
		s.compare(t, where+"[]", s.resolve(obj(schema, "items")), typ.Elem())
	case reflect.Struct:
		props := obj(schema, "properties")
		var documented, fields []string
		for name := range props {
			documented = append(documented, name)
		}
		for _, f := range testutil.JSONFields(typ) {
			name := f.Name
			fields = append(fields, name)
			if p, ok := props[name].(map[string]any); ok {
				s.compare(t, where+"."+name, s.resolve(p), f.Type)
			}
		}
		slices.Sort(documented)
		slices.Sort(fields)
		if diff := cmp.Diff(fields, documented); diff != "" {
			t.Errorf("%s: properties of %v (-Go +documented):\n%s", where, typ, diff)
		}
	}
}

// schemaTypes returns a schema's type as a list ("type": "x" or ["x",
// "null"]).
func schemaTypes(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, e := range v {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// jsonType is the JSON Schema type of values of t.
func jsonType(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Struct, reflect.Map:
		return "object"
	}
	return fmt.Sprintf("unknown (%v)", t)
}

// example checks that a media type's example, if any, decodes into typ
// with no field left over.
func (s spec) example(t *testing.T, where string, media map[string]any, typ reflect.Type) {
	t.Helper()
	ex, ok := media["example"]
	if !ok {
		return
	}
	b, err := json.Marshal(ex)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(reflect.New(typ).Interface()); err != nil {
		t.Errorf("%s: example %s does not decode into %v: %v", where, b, typ, err)
	}
}
