package daemon

import (
	"cmp"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// ConfigError reports what is wrong with a configuration, one problem per line of its
// message, each as "FILE:LINE: KEY: what is wrong".
type ConfigError struct {
	// File is the configuration file, "" when the configuration did not come from one.
	File string
	// Problems are in file order when File is set; there is at least one.
	Problems []ConfigProblem
}

// ConfigProblem is one thing wrong with a configuration.
type ConfigProblem struct {
	// Line is the 1-based line in the file, 0 when unknown or not from a file.
	Line int
	// Key is the dotted key, such as "serve.policy.deny[1]"; "" when the problem is
	// not about one key.
	Key string
	// Msg says what is wrong.
	Msg string
}

// Error implements error.
func (e *ConfigError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.format(e.File)
	}
	return strings.Join(lines, "\n")
}

func (p ConfigProblem) format(file string) string {
	var b strings.Builder
	switch {
	case file != "" && p.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", file, p.Line)
	case file != "":
		b.WriteString(file + ": ")
	case p.Line > 0:
		fmt.Fprintf(&b, "line %d: ", p.Line)
	}
	if p.Key != "" {
		b.WriteString(p.Key + ": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// problems collects the problems of a configuration.
type problems []ConfigProblem

func (ps *problems) add(key, format string, args ...any) {
	*ps = append(*ps, ConfigProblem{Key: key, Msg: fmt.Sprintf(format, args...)})
}

// maxProblems is how many problems a ConfigError lists; the last says how many more
// there were.
const maxProblems = 20

// err returns the problems as a *ConfigError, or nil when there are none.
func (ps problems) err(file string) error {
	if len(ps) == 0 {
		return nil
	}
	if len(ps) > maxProblems {
		more := len(ps) - (maxProblems - 1)
		ps = append(ps[:maxProblems-1:maxProblems-1], ConfigProblem{Msg: fmt.Sprintf("and %d more problems", more)})
	}
	return &ConfigError{File: file, Problems: ps}
}

// nodeError is the error of an UnmarshalYAML method: it keeps the position of the
// node, from which LoadConfig finds the key.
type nodeError struct {
	line, column int
	msg          string
}

func (e *nodeError) Error() string { return fmt.Sprintf("line %d: %s", e.line, e.msg) }

func nodeErrorf(n *yaml.Node, format string, args ...any) error {
	return &nodeError{line: n.Line, column: n.Column, msg: fmt.Sprintf(format, args...)}
}

// describeNode returns a short description of a node's value for error messages.
func describeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		v := n.Value
		if len(v) > 40 {
			v = v[:37] + "..."
		}
		switch n.ShortTag() {
		case "!!null":
			return "nothing"
		case "!!str":
			return strconv.Quote(v)
		}
		return v
	}
	return "a " + n.ShortTag()
}

// nodeIndex maps the keys of a parsed YAML document to their nodes, so that errors
// found while decoding or validating can name the key and its line.
type nodeIndex struct {
	byLine map[int][]indexEntry // every key and value node, by line, in document order
	byPath map[string]int       // the line of the first occurrence of each key
	// dups are the duplicate keys. They are found here because yaml.v3 reports them
	// in time and space quadratic in the size of a mapping.
	dups problems
}

type indexEntry struct {
	path  string
	node  *yaml.Node
	isKey bool
}

func newNodeIndex(doc *yaml.Node) *nodeIndex {
	ix := &nodeIndex{byLine: map[int][]indexEntry{}, byPath: map[string]int{}}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		ix.walk(doc.Content[0], "", 0)
	}
	return ix
}

// walk records n, the value at path, whose key (if any) is on keyLine. Aliases are not
// followed.
func (ix *nodeIndex) walk(n *yaml.Node, path string, keyLine int) {
	ix.byLine[n.Line] = append(ix.byLine[n.Line], indexEntry{path: path, node: n})
	if _, ok := ix.byPath[path]; !ok {
		line := n.Line
		if keyLine > 0 {
			line = keyLine
		}
		ix.byPath[path] = line
	}
	switch n.Kind {
	case yaml.MappingNode:
		keys := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			if k.Kind == yaml.ScalarNode {
				if first, dup := keys[k.Value]; dup {
					ix.dups = append(ix.dups, ConfigProblem{Line: k.Line, Key: p, Msg: fmt.Sprintf("duplicate key (first at line %d)", first)})
				} else {
					keys[k.Value] = k.Line
				}
			}
			ix.byLine[k.Line] = append(ix.byLine[k.Line], indexEntry{path: p, node: k, isKey: true})
			ix.walk(v, p, k.Line)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			ix.walk(c, fmt.Sprintf("%s[%d]", path, i), 0)
		}
	}
}

// keyOnLine returns the path of the key named name on line, or "".
func (ix *nodeIndex) keyOnLine(line int, name string) string {
	for _, e := range ix.byLine[line] {
		if e.isKey && e.node.Value == name {
			return e.path
		}
	}
	return ""
}

// valueOnLine returns the value node on line that yaml.v3 complained about: of the
// given kind, at a key whose Go type is typ, with the value it quoted (a trailing "..."
// marks a truncated value), and not already used for an earlier message.
func (ix *nodeIndex) valueOnLine(line int, kind yaml.Kind, quoted, typ string, used map[*yaml.Node]bool) (indexEntry, bool) {
	prefix, truncated := strings.CutSuffix(quoted, "...")
	var best *indexEntry
	bestScore := 0
	entries := ix.byLine[line]
	for i, e := range entries {
		if e.isKey || e.node.Kind != kind || used[e.node] {
			continue
		}
		score := 1
		if t := typeAtPath(e.path); t != nil && t.String() == typ {
			score += 2
		}
		if kind != yaml.ScalarNode || e.node.Value == quoted || truncated && strings.HasPrefix(e.node.Value, prefix) {
			score++
		}
		if score > bestScore {
			best, bestScore = &entries[i], score
		}
	}
	if best == nil {
		return indexEntry{}, false
	}
	used[best.node] = true
	return *best, true
}

// typeAtPath returns the Go type of the value at path in a Config, or nil.
func typeAtPath(path string) reflect.Type {
	t := reflect.TypeFor[Config]()
	for path != "" {
		if rest, ok := strings.CutPrefix(path, "["); ok {
			_, after, ok := strings.Cut(rest, "]")
			if !ok || t.Kind() != reflect.Slice {
				return nil
			}
			t, path = t.Elem(), strings.TrimPrefix(after, ".")
			continue
		}
		end := strings.IndexAny(path, ".[")
		if end < 0 {
			end = len(path)
		}
		name := path[:end]
		path = strings.TrimPrefix(path[end:], ".")
		if t.Kind() != reflect.Struct {
			return nil
		}
		var next reflect.Type
		for i := 0; i < t.NumField(); i++ {
			if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); tag == name {
				next = t.Field(i).Type
				break
			}
		}
		if next == nil {
			return nil
		}
		t = next
	}
	return t
}

// at returns the value node at line and column.
func (ix *nodeIndex) at(line, column int) (indexEntry, bool) {
	for _, e := range ix.byLine[line] {
		if !e.isKey && e.node.Column == column {
			return e, true
		}
	}
	return indexEntry{}, false
}

// decodeError turns an error of yaml.Decoder.Decode into a *ConfigError.
func (ix *nodeIndex) decodeError(file string, err error) error {
	var te *yaml.TypeError
	var ne *nodeError
	var ps problems
	switch {
	case errors.As(err, &te):
		used := map[*yaml.Node]bool{}
		for i, msg := range te.Errors {
			if i >= maxProblems {
				// Not shown: err only counts them.
				ps = append(ps, ConfigProblem{Msg: msg})
				continue
			}
			ps = append(ps, ix.typeProblem(msg, used))
		}
	case errors.As(err, &ne):
		p := ConfigProblem{Line: ne.line, Msg: ne.msg}
		if e, ok := ix.at(ne.line, ne.column); ok {
			p.Key = e.path
		}
		ps = append(ps, p)
	default:
		ps = append(ps, syntaxProblem(err))
	}
	sortProblems(ps)
	return ps.err(file)
}

// locate adds line numbers to the problems of a Validate error.
func (ix *nodeIndex) locate(file string, err error) error {
	var ce *ConfigError
	if !errors.As(err, &ce) {
		return fmt.Errorf("%s: %w", file, err)
	}
	ps := slices.Clone(problems(ce.Problems))
	for i := range ps {
		if line, ok := ix.byPath[ps[i].Key]; ok && ps[i].Key != "" && ps[i].Line == 0 {
			ps[i].Line = line
		}
	}
	sortProblems(ps)
	return ps.err(file)
}

// sortProblems orders problems by line, those without a line last.
func sortProblems(ps problems) {
	slices.SortStableFunc(ps, func(a, b ConfigProblem) int {
		if (a.Line == 0) != (b.Line == 0) {
			if a.Line == 0 {
				return 1
			}
			return -1
		}
		return cmp.Compare(a.Line, b.Line)
	})
}

// syntaxProblem turns a yaml.v3 parse error, "yaml: line N: what", into a problem.
func syntaxProblem(err error) ConfigProblem {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, what, ok := strings.Cut(rest, ": "); ok {
			if n, err := strconv.Atoi(num); err == nil {
				return ConfigProblem{Line: n, Msg: what}
			}
		}
	}
	return ConfigProblem{Msg: msg}
}

// typeProblem turns one message of a *yaml.TypeError ("line N: what") into a problem
// that names the key and says what was expected.
func (ix *nodeIndex) typeProblem(msg string, used map[*yaml.Node]bool) ConfigProblem {
	p := syntaxProblem(errors.New(msg))
	what := p.Msg
	if name, typ, ok := cutPair(what, "field ", " not found in type "); ok {
		p.Key = ix.keyOnLine(p.Line, name)
		p.Msg = unknownKeyMsg(name, knownKeys(typ))
		return p
	}
	if name, _, ok := cutPair(what, "field ", " already set in type "); ok {
		p.Key = ix.keyOnLine(p.Line, name)
		p.Msg = "duplicate key"
		return p
	}
	rest, ok := strings.CutPrefix(what, "cannot unmarshal ")
	i := strings.LastIndex(rest, " into ")
	if !ok || i < 0 {
		return p
	}
	head, typ := rest[:i], rest[i+len(" into "):]
	tag, quoted, _ := strings.Cut(head, " `")
	quoted = strings.TrimSuffix(quoted, "`")
	kind := yaml.ScalarNode
	switch tag {
	case "!!seq":
		kind = yaml.SequenceNode
	case "!!map":
		kind = yaml.MappingNode
	}
	got := strings.TrimSpace(tag + " " + quoted)
	if e, ok := ix.valueOnLine(p.Line, kind, quoted, typ, used); ok {
		p.Key = e.path
		got = describeNode(e.node)
	}
	p.Msg = fmt.Sprintf("want %s, got %s", describeType(typ), got)
	return p
}

// cutPair splits "PREFIX a SEP b" into a and b.
func cutPair(s, prefix, sep string) (a, b string, ok bool) {
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return "", "", false
	}
	return strings.Cut(rest, sep)
}

// describeType names what a Go type wants, for "want ..." messages.
func describeType(typ string) string {
	switch {
	case typ == "bool":
		return "true or false"
	case strings.HasPrefix(typ, "int") || strings.HasPrefix(typ, "uint"):
		return "an integer"
	case typ == "string":
		return "a string"
	case strings.HasPrefix(typ, "[]"):
		return "a list"
	case strings.HasPrefix(typ, "map[") || strings.HasPrefix(typ, "daemon."):
		return "a mapping"
	}
	return "a value of type " + typ
}

// knownKeys returns the YAML keys of the struct type named typ ("daemon.ServeConfig")
// found in Config.
func knownKeys(typ string) []string {
	var keys []string
	seen := map[reflect.Type]bool{}
	var visit func(t reflect.Type)
	visit = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || seen[t] {
			return
		}
		seen[t] = true
		var names []string
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name != "" && name != "-" {
				names = append(names, name)
			}
			visit(f.Type)
		}
		if t.String() == typ {
			keys = names
		}
	}
	visit(reflect.TypeFor[Config]())
	return keys
}

// unknownKeyMsg says that name is not a key, suggesting the closest known one.
func unknownKeyMsg(name string, known []string) string {
	best, bestDist := "", len(name)+1
	for _, k := range known {
		if d := editDistance(strings.ToLower(name), k); d < bestDist && d <= max(1, len(k)/3) {
			best, bestDist = k, d
		}
	}
	switch {
	case best != "":
		return fmt.Sprintf("unknown key %q; did you mean %q?", name, best)
	case len(known) > 0:
		return fmt.Sprintf("unknown key %q; known keys here: %s", name, strings.Join(known, ", "))
	}
	return fmt.Sprintf("unknown key %q", name)
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
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
