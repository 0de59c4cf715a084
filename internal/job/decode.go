// Strict decoding of a job spec.
//
// encoding/json is lenient where a job spec must not be: it ignores unknown
// fields, matches keys regardless of case, keeps the last of two duplicate
// keys, and stops at the first type error, which it describes in terms of Go
// types. A user who misspells "image" would get a job that silently runs in
// the wrong image.
//
// So Decode walks the JSON itself, against the Spec type by reflection
// (following the json tags exactly), and fills the Spec as it goes. Every
// unknown field, duplicate key and type mismatch becomes a FieldError
// carrying the path where it occurred ("steps[2].timeout"); the walk then
// skips the offending value and carries on, so one call reports them all.
//
// Syntax is checked first, by json.Valid: fast, and its errors say exactly
// where the fault is. The walk can then assume well-formed input. When the
// input is malformed, the walk runs over the well-formed part before the
// fault only, which tells the path at the fault and keeps the problems found
// on the way.
//
// Strings are unescaped by encoding/json, so they read exactly as they would
// with json.Unmarshal (invalid UTF-8 becomes U+FFFD). Duration and ByteSize
// are decoded here rather than by their UnmarshalJSON methods, with the same
// rules, so that messages can cut a long value short. Any other
// json.Unmarshaler met on the way is called with the raw bytes of its value.

package job

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Decode reads a JSON spec strictly, with the size limit of DefaultLimits;
// see Limits.Decode.
func Decode(data []byte) (Spec, error) { return DefaultLimits().Decode(data) }

// Decode reads a JSON spec strictly: the size is checked first (against
// l.MaxSpecBytes), then unknown fields, duplicate keys and values of the
// wrong type are refused, each named by its path. The error is a
// *ValidationError listing every problem found; errors.Is matches
// ErrTooLarge or ErrMalformed where they apply.
//
// A JSON null stands for an absent field; inside an array or a map it is
// refused. Decode neither fills in defaults nor checks values: call
// Normalize and Validate for that, except for the version: a spec of a
// version this build does not understand is refused here, since its fields
// would be misread.
func (l Limits) Decode(data []byte) (Spec, error) {
	if err := l.CheckSize(int64(len(data))); err != nil {
		return Spec{}, err
	}
	d := &decoder{data: data}
	if len(bytes.TrimSpace(data)) == 0 {
		return Spec{}, d.malformed("", "the spec is empty")
	}
	var syntaxMsg string
	if !json.Valid(data) {
		var raw json.RawMessage
		var se *json.SyntaxError
		idx, msg := int64(len(data)), "not well-formed JSON"
		if errors.As(json.Unmarshal(data, &raw), &se) {
			idx, msg = se.Offset-1, se.Error() // Offset counts the faulty byte
			if strings.HasPrefix(msg, "unexpected end") {
				idx = int64(len(data))
			}
		}
		line, col := position(data, idx)
		syntaxMsg = fmt.Sprintf("invalid JSON at line %d, column %d: %s", line, col, msg)
		d.data, d.prefix = data[:max(idx, 0)], true
	}

	var s Spec
	err := d.top(reflect.ValueOf(&s).Elem())
	switch {
	case err == errTruncated:
		return Spec{}, d.malformed(d.faultPath, syntaxMsg)
	case syntaxMsg != "":
		return Spec{}, d.malformed("", syntaxMsg)
	}
	if s.Version != 0 && s.Version != SpecVersion {
		// Fields of another version would be misread: refuse the version
		// first, whatever else is wrong.
		d.p.list = slices.Insert(d.p.list, 0, FieldError{Field: "version", Message: unsupportedVersion(s.Version)})
	}
	if err := d.p.err(); err != nil {
		return Spec{}, err
	}
	return s, nil
}

// errTruncated stops the walk at the end of the well-formed part of a
// malformed input.
var errTruncated = errors.New("truncated")

type decoder struct {
	data      []byte
	pos       int
	prefix    bool   // data is the well-formed part of a malformed input
	faultPath string // where the walk was when the input ended
	p         problems
}

var (
	durationType    = reflect.TypeFor[Duration]()
	byteSizeType    = reflect.TypeFor[ByteSize]()
	fileType        = reflect.TypeFor[File]()
	timeType        = reflect.TypeFor[time.Time]()
	fileMode        = reflect.TypeFor[FileMode]()
	unmarshalerType = reflect.TypeFor[json.Unmarshaler]()
)

// top decodes the whole document into v, a struct.
func (d *decoder) top(v reflect.Value) error {
	tok, err := d.token()
	if err != nil {
		return d.truncated("", err)
	}
	if !isDelim(tok, '{') {
		d.p.addf("", "the spec must be a JSON object, not %s", describeToken(tok))
		return d.truncated("", d.skip(tok))
	}
	return d.object("", v)
}

// truncated records p as the place where the input ended, if it did, and
// returns err.
func (d *decoder) truncated(p string, err error) error {
	if err == errTruncated && d.faultPath == "" {
		d.faultPath = p
	}
	return err
}

// value decodes the next value into v. inContainer says whether the value
// is an array element or a map value, where null is refused. The only error
// is errTruncated; problems are collected in d.p.
func (d *decoder) value(p string, v reflect.Value, inContainer bool) error {
	d.space()
	start := d.pos
	tok, err := d.token()
	if err != nil {
		return d.truncated(p, err)
	}
	return d.truncated(p, d.valueToken(p, v, tok, start, inContainer))
}

func (d *decoder) valueToken(p string, v reflect.Value, tok json.Token, start int, inContainer bool) error {
	t := v.Type()
	if tok == nil {
		if inContainer {
			d.p.addf(p, "must be %s, not null", describeType(t))
		}
		return nil // null stands for an absent field: keep the zero value
	}
	switch t {
	case durationType:
		return d.duration(p, v, tok)
	case byteSizeType:
		return d.byteSize(p, v, tok)
	case timeType:
		x, ok := tok.(string)
		if !ok {
			return d.mismatch(p, t, tok)
		}
		tm, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(x))
		if err != nil {
			d.p.addf(p, "%s is not a time (RFC 3339, such as \"2026-01-02T15:04:05Z\")", quote(x))
			return nil
		}
		v.Set(reflect.ValueOf(tm))
		return nil
	case fileType:
		// A string is short for {"content": ...}; an object is walked
		// strictly like any struct (File's UnmarshalJSON would not be).
		if s, ok := tok.(string); ok {
			v.Set(reflect.ValueOf(InlineFile(s)))
			return nil
		}
		if !isDelim(tok, '{') {
			d.p.addf(p, "must be a string (the content) or an object with content or blob, not %s", describeToken(tok))
			return d.skip(tok)
		}
		return d.object(p, v)
	}
	if t.Kind() != reflect.Pointer && reflect.PointerTo(t).Implements(unmarshalerType) {
		if err := d.skip(tok); err != nil {
			return err
		}
		if err := v.Addr().Interface().(json.Unmarshaler).UnmarshalJSON(d.data[start:d.pos]); err != nil {
			d.p.add(p, err.Error())
		}
		return nil
	}
	switch t.Kind() {
	case reflect.Pointer:
		elem := reflect.New(t.Elem())
		if err := d.valueToken(p, elem.Elem(), tok, start, inContainer); err != nil {
			return err
		}
		v.Set(elem)
	case reflect.Struct:
		if !isDelim(tok, '{') {
			return d.mismatch(p, t, tok)
		}
		return d.object(p, v)
	case reflect.Map:
		if !isDelim(tok, '{') {
			return d.mismatch(p, t, tok)
		}
		return d.mapValue(p, v)
	case reflect.Slice:
		if !isDelim(tok, '[') {
			return d.mismatch(p, t, tok)
		}
		return d.array(p, v)
	case reflect.String:
		s, ok := tok.(string)
		if !ok {
			return d.mismatch(p, t, tok)
		}
		v.SetString(s)
	case reflect.Bool:
		b, ok := tok.(bool)
		if !ok {
			return d.mismatch(p, t, tok)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := tok.(json.Number)
		if !ok {
			return d.mismatch(p, t, tok)
		}
		i, err := strconv.ParseInt(string(n), 10, 64)
		switch {
		case errors.Is(err, strconv.ErrRange) || err == nil && v.OverflowInt(i):
			d.p.addf(p, "%s is out of range", cut(string(n)))
		case err != nil:
			d.p.addf(p, "must be an integer, not %s", cut(string(n)))
		default:
			v.SetInt(i)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := tok.(json.Number)
		if !ok {
			return d.mismatch(p, t, tok)
		}
		i, err := strconv.ParseUint(string(n), 10, 64)
		switch {
		case errors.Is(err, strconv.ErrRange) || err == nil && v.OverflowUint(i):
			d.p.addf(p, "%s is out of range", cut(string(n)))
		case err != nil:
			d.p.addf(p, "must be a non-negative integer, not %s", cut(string(n)))
		default:
			v.SetUint(i)
		}
	case reflect.Float32, reflect.Float64:
		n, ok := tok.(json.Number)
		if !ok {
			return d.mismatch(p, t, tok)
		}
		f, err := strconv.ParseFloat(string(n), t.Bits())
		if err != nil {
			d.p.addf(p, "%s is out of range", cut(string(n)))
			return nil
		}
		v.SetFloat(f)
	default:
		// Only a change to the Spec types can get here; the tests decode a
		// spec with every field set.
		panic(fmt.Sprintf("job: Decode cannot fill a %s", t))
	}
	return nil
}

// object decodes the members of an object, whose '{' has been read, into
// the struct v.
func (d *decoder) object(p string, v reflect.Value) error {
	fields := structFields(v.Type())
	var seen uint64 // bit i: the field of ordinal i was read
	for {
		more, err := d.more()
		if err != nil || !more {
			return d.truncated(p, err)
		}
		key, err := d.key()
		if err != nil {
			return d.truncated(p, err)
		}
		kp := FieldPath(p, key)
		f, known := fields[key]
		switch {
		case known && seen&(1<<f.ord) != 0:
			d.p.add(kp, "appears more than once")
		case !known:
			if d.p.full() {
				d.p.dropped++ // spare the search for a suggestion
			} else {
				d.p.add(kp, unknownField(key, fields))
			}
		default:
			seen |= 1 << f.ord
			if err := d.value(kp, v.Field(f.ord), false); err != nil {
				return err
			}
			continue
		}
		if err := d.skipValue(); err != nil {
			return d.truncated(kp, err)
		}
	}
}

// mapValue decodes an object, whose '{' has been read, into the map v.
func (d *decoder) mapValue(p string, v reflect.Value) error {
	t := v.Type()
	m := reflect.MakeMap(t)
	v.Set(m)
	seen := make(map[string]bool)
	for {
		more, err := d.more()
		if err != nil || !more {
			return d.truncated(p, err)
		}
		key, err := d.key()
		if err != nil {
			return d.truncated(p, err)
		}
		kp := FieldPath(p, key)
		if seen[key] {
			d.p.add(kp, "appears more than once")
			if err := d.skipValue(); err != nil {
				return d.truncated(kp, err)
			}
			continue
		}
		seen[key] = true
		elem := reflect.New(t.Elem()).Elem()
		if err := d.value(kp, elem, true); err != nil {
			return err
		}
		m.SetMapIndex(reflect.ValueOf(key).Convert(t.Key()), elem)
	}
}

// array decodes an array, whose '[' has been read, into the slice v.
func (d *decoder) array(p string, v reflect.Value) error {
	t := v.Type()
	zero := reflect.Zero(t.Elem())
	s := reflect.MakeSlice(t, 0, 0)
	defer func() { v.Set(s) }()
	for i := 0; ; i++ {
		more, err := d.more()
		if err != nil || !more {
			return d.truncated(p, err)
		}
		s = reflect.Append(s, zero)
		if err := d.value(IndexPath(p, i), s.Index(i), true); err != nil {
			return err
		}
	}
}

func (d *decoder) duration(p string, v reflect.Value, tok json.Token) error {
	switch x := tok.(type) {
	case string:
		// The rules of ParseDuration, with messages that cut long values short.
		td, err := time.ParseDuration(strings.TrimSpace(x))
		switch {
		case err != nil:
			d.p.addf(p, "%s is not a duration", quote(x))
		case td < 0:
			d.p.addf(p, "%s is negative", quote(x))
		default:
			v.SetInt(int64(td))
		}
	case json.Number:
		d.p.addf(p, "%s is not a duration (use a string such as \"10m\")", cut(string(x)))
	default:
		return d.mismatch(p, v.Type(), tok)
	}
	return nil
}

func (d *decoder) byteSize(p string, v reflect.Value, tok json.Token) error {
	var s string
	switch x := tok.(type) {
	case string:
		s = x
	case json.Number:
		s = string(x)
	default:
		return d.mismatch(p, v.Type(), tok)
	}
	b, err := ParseByteSize(s)
	switch {
	case err != nil && len(s) > maxQuoted:
		d.p.addf(p, "%s is not a size (use e.g. \"512MiB\" or \"4GiB\")", quote(s))
	case err != nil:
		d.p.add(p, err.Error())
	default:
		v.SetInt(int64(b))
	}
	return nil
}

// mismatch records that the value tok begins is not of type t, and skips it.
func (d *decoder) mismatch(p string, t reflect.Type, tok json.Token) error {
	msg := fmt.Sprintf("must be %s, not %s", describeType(t), describeToken(tok))
	if t.Kind() == reflect.String {
		switch tok.(type) {
		case json.Number, bool:
			msg += " (quote it)"
		}
	}
	d.p.add(p, msg)
	return d.skip(tok)
}

// The scanner below assumes well-formed JSON (or a well-formed prefix, where
// running out of input means errTruncated): json.Valid has vouched for it.

// space skips white space.
func (d *decoder) space() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// token reads the next scalar, or the '{' or '[' opening a value: a
// json.Delim, string, json.Number, bool or nil, as json.Decoder.Token would.
func (d *decoder) token() (json.Token, error) {
	d.space()
	if d.pos >= len(d.data) {
		return nil, errTruncated
	}
	switch c := d.data[d.pos]; c {
	case '{', '[':
		d.pos++
		return json.Delim(c), nil
	case '"':
		return d.str()
	case 't':
		return true, d.literal(4)
	case 'f':
		return false, d.literal(5)
	case 'n':
		return nil, d.literal(4)
	}
	start := d.pos
	for d.pos < len(d.data) && strings.IndexByte("+-.eE0123456789", d.data[d.pos]) >= 0 {
		d.pos++
	}
	if d.pos == start || d.prefix && d.pos == len(d.data) {
		// The number may go on past the fault. (Nothing read cannot happen
		// on JSON that json.Valid accepted; stop rather than loop.)
		return nil, errTruncated
	}
	return json.Number(d.data[start:d.pos]), nil
}

func (d *decoder) literal(n int) error {
	if d.pos+n > len(d.data) {
		return errTruncated
	}
	d.pos += n
	return nil
}

// str reads a string, d.data[d.pos] being its opening quote.
func (d *decoder) str() (string, error) {
	start := d.pos
	simple, err := d.skipString()
	if err != nil {
		return "", err
	}
	raw := d.data[start:d.pos]
	if simple && utf8.Valid(raw) {
		return string(raw[1 : len(raw)-1]), nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", errTruncated // cannot happen: json.Valid accepted it
	}
	return s, nil
}

// skipString moves past a string, d.data[d.pos] being its opening quote,
// and reports whether it held no escapes.
func (d *decoder) skipString() (simple bool, err error) {
	simple = true
	for i := d.pos + 1; i < len(d.data); i++ {
		switch d.data[i] {
		case '\\':
			simple = false
			i++
		case '"':
			d.pos = i + 1
			return simple, nil
		}
	}
	return false, errTruncated
}

// more moves to the next member of the object or array being read,
// past a comma, and reports whether there is one.
func (d *decoder) more() (bool, error) {
	d.space()
	if d.pos >= len(d.data) {
		return false, errTruncated
	}
	switch d.data[d.pos] {
	case ',':
		d.pos++
		return true, nil
	case '}', ']':
		d.pos++
		return false, nil
	}
	return true, nil // the first member
}

// key reads an object key and the colon after it.
func (d *decoder) key() (string, error) {
	d.space()
	if d.pos >= len(d.data) {
		return "", errTruncated
	}
	key, err := d.str()
	if err != nil {
		return "", err
	}
	d.space()
	if d.pos >= len(d.data) {
		return "", errTruncated
	}
	d.pos++ // ':'
	return key, nil
}

// skipValue reads and discards the next value.
func (d *decoder) skipValue() error {
	tok, err := d.token()
	if err != nil {
		return err
	}
	return d.skip(tok)
}

// skip discards the rest of the value tok begins. It loops rather than
// recurses, so nesting depth costs no stack.
func (d *decoder) skip(tok json.Token) error {
	if !isDelim(tok, '{') && !isDelim(tok, '[') {
		return nil
	}
	for depth := 1; depth > 0; {
		if d.pos >= len(d.data) {
			return errTruncated
		}
		switch d.data[d.pos] {
		case '"':
			if _, err := d.skipString(); err != nil {
				return err
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			depth--
		}
		d.pos++
	}
	return nil
}

// malformed returns the problems found so far followed by msg, marked
// ErrMalformed.
func (d *decoder) malformed(p, msg string) error {
	d.p.list = append(d.p.list, FieldError{Field: p, Message: msg})
	return &kindError{err: d.p.validationError(), kind: ErrMalformed}
}

// position returns the 1-based line and column (in bytes) of the byte at
// index i.
func position(data []byte, i int64) (line, col int) {
	i = min(max(i, 0), int64(len(data)))
	before := data[:i]
	line = bytes.Count(before, []byte("\n")) + 1
	col = int(i) - bytes.LastIndexByte(before, '\n')
	return line, col
}

func isDelim(tok json.Token, want json.Delim) bool {
	d, ok := tok.(json.Delim)
	return ok && d == want
}

// describeType names what a value of type t looks like in JSON.
func describeType(t reflect.Type) string {
	switch t {
	case durationType:
		return `a duration such as "10m"`
	case byteSizeType:
		return `a size such as "4GiB"`
	case timeType:
		return `a time such as "2026-01-02T15:04:05Z"`
	case fileMode:
		return `an octal mode such as "0755"`
	}
	switch t.Kind() {
	case reflect.Pointer:
		return describeType(t.Elem())
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "a " + t.String()
}

// describeToken names the JSON value tok begins.
func describeToken(tok json.Token) string {
	switch x := tok.(type) {
	case json.Delim:
		if x == '[' {
			return "an array"
		}
		return "an object"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprint(tok)
}

// cut shortens s, written unquoted in a message (a number).
func cut(s string) string {
	if len(s) <= maxQuoted {
		return s
	}
	return s[:maxQuoted] + "…"
}

// unknownField words the problem for an unknown key, suggesting the field
// it is closest to when one is close.
func unknownField(key string, fields map[string]field) string {
	best, bestDist := "", 3
	for name := range fields {
		dist := editDistance(strings.ToLower(key), strings.ToLower(name))
		if strings.EqualFold(key, name) {
			dist = 0
		}
		if dist < bestDist || dist == bestDist && best != "" && name < best {
			best, bestDist = name, dist
		}
	}
	if best == "" || bestDist > 0 && len(key) < 4 {
		return "unknown field"
	}
	return fmt.Sprintf("unknown field (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance between a and b, in bytes; it
// gives up early (returning a large value) for very different lengths.
func editDistance(a, b string) int {
	if len(a)-len(b) > 2 || len(b)-len(a) > 2 || len(a) > 64 {
		return 100
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

var fieldCache sync.Map // reflect.Type → map[string]field

// field is a struct field the decoder fills: its ordinal in the struct.
type field struct{ ord int }

// structFields maps the wire names of t's fields (from their json tags, as
// encoding/json reads them) to the fields.
func structFields(t reflect.Type) map[string]field {
	if f, ok := fieldCache.Load(t); ok {
		return f.(map[string]field)
	}
	if t.NumField() > 64 {
		panic(fmt.Sprintf("job: Decode handles structs of up to 64 fields, %s has %d", t, t.NumField()))
	}
	fields := make(map[string]field)
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		if f.Anonymous {
			panic(fmt.Sprintf("job: Decode does not handle the embedded field %s.%s", t, f.Name))
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = f.Name
		}
		fields[name] = field{ord: i}
	}
	fieldCache.Store(t, fields)
	return fields
}
