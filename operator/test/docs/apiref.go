package docs

import (
	"fmt"
	"slices"
	"strings"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// FieldTable renders the fields of a CRD version's spec and status as Markdown tables, from the schema
// controller-gen generated out of the Go types' comments and markers: what `kubectl explain` shows, in
// one page, never out of date.
func FieldTable(crdYAML []byte, version string) (string, error) {
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(crdYAML, &crd); err != nil {
		return "", fmt.Errorf("decode CRD: %w", err)
	}
	i := slices.IndexFunc(crd.Spec.Versions, func(v apiextensionsv1.CustomResourceDefinitionVersion) bool { return v.Name == version })
	if i < 0 || crd.Spec.Versions[i].Schema == nil || crd.Spec.Versions[i].Schema.OpenAPIV3Schema == nil {
		return "", fmt.Errorf("CRD %s has no schema for version %s", crd.Name, version)
	}
	root := crd.Spec.Versions[i].Schema.OpenAPIV3Schema
	var b strings.Builder
	for _, top := range []string{"spec", "status"} {
		s, ok := root.Properties[top]
		if !ok {
			continue
		}
		fmt.Fprintf(&b, "\n#### `%s`\n\n| Field | Type | Rules | Description |\n|---|---|---|---|\n", top)
		walk(&b, top, s)
	}
	return b.String(), nil
}

func walk(b *strings.Builder, path string, s apiextensionsv1.JSONSchemaProps) {
	names := make([]string, 0, len(s.Properties))
	for n := range s.Properties {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		child := s.Properties[n]
		p := path + "." + n
		fmt.Fprintf(b, "| `%s` | %s | %s | %s |\n", p, typeOf(child), rules(child, slices.Contains(s.Required, n)), cell(child.Description))
		switch {
		case child.Type == "object" && len(child.Properties) > 0:
			walk(b, p, child)
		case child.Type == "array" && child.Items != nil && child.Items.Schema != nil && len(child.Items.Schema.Properties) > 0 &&
			!strings.HasSuffix(p, ".conditions"):
			walk(b, p+"[]", *child.Items.Schema)
		}
	}
}

func typeOf(s apiextensionsv1.JSONSchemaProps) string {
	switch {
	case s.Type == "array" && s.Items != nil && s.Items.Schema != nil:
		return "[]" + typeOf(*s.Items.Schema)
	case s.Type == "object" && s.AdditionalProperties != nil && s.AdditionalProperties.Schema != nil:
		return "map[string]" + typeOf(*s.AdditionalProperties.Schema)
	case s.XIntOrString:
		return "int or string"
	}
	return s.Type
}

func rules(s apiextensionsv1.JSONSchemaProps, required bool) string {
	var r []string
	if required {
		r = append(r, "required")
	}
	if s.Default != nil {
		r = append(r, "default `"+string(s.Default.Raw)+"`")
	}
	if len(s.Enum) > 0 {
		var vs []string
		for _, e := range s.Enum {
			vs = append(vs, "`"+strings.Trim(string(e.Raw), `"`)+"`")
		}
		r = append(r, "one of "+strings.Join(vs, ", "))
	}
	if s.Minimum != nil {
		r = append(r, fmt.Sprintf("≥ %g", *s.Minimum))
	}
	if s.Maximum != nil {
		r = append(r, fmt.Sprintf("≤ %g", *s.Maximum))
	}
	if s.MinItems != nil {
		r = append(r, "at least "+plural(*s.MinItems, "item"))
	}
	if s.MaxItems != nil {
		r = append(r, "at most "+plural(*s.MaxItems, "item"))
	}
	if s.MaxLength != nil {
		r = append(r, fmt.Sprintf("at most %d characters", *s.MaxLength))
	}
	if s.Pattern != "" {
		r = append(r, "pattern `"+s.Pattern+"`")
	}
	for _, v := range s.XValidations {
		msg := v.Message
		if msg == "" {
			msg = messageTemplate(v.MessageExpression)
		}
		if v.FieldPath != "" {
			msg = "`" + v.FieldPath + "`: " + msg
		}
		if msg != "" {
			r = append(r, msg)
		}
	}
	return cell(strings.Join(r, "; "))
}

// messageTemplate is the text of a CEL messageExpression such as
// 'weights must sum to 100, not %d'.format([...]), with "…" where a value goes.
func messageTemplate(expr string) string {
	i := strings.IndexAny(expr, `'"`)
	if i < 0 {
		return ""
	}
	j := strings.IndexByte(expr[i+1:], expr[i])
	if j < 0 {
		return ""
	}
	text := expr[i+1 : i+1+j]
	for _, verb := range []string{"%s", "%d", "%v", "%f"} {
		text = strings.ReplaceAll(text, verb, "…")
	}
	return text
}

func plural(n int64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// cell makes text fit a table cell: one line, pipes escaped.
func cell(s string) string {
	return strings.ReplaceAll(strings.Join(strings.Fields(s), " "), "|", `\|`)
}

// Splice replaces what lies between the lines "<!-- BEGIN GENERATED name" and "<!-- END GENERATED
// name" of page with text.
func Splice(page, name, text string) (string, error) {
	begin, end := "<!-- BEGIN GENERATED "+name, "<!-- END GENERATED "+name
	i := strings.Index(page, begin)
	j := strings.Index(page, end)
	if i < 0 || j < i {
		return "", fmt.Errorf("no %q ... %q markers", begin, end)
	}
	i += strings.Index(page[i:], "\n") + 1
	return page[:i] + text + "\n" + page[j:], nil
}
