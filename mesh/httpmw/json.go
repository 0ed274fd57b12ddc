package httpmw

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Error is the JSON body of every error answer: {"error": "...", "field": "...", "dependency": "..."}.
type Error struct {
	// Message says what went wrong.
	Message string `json:"error"`
	// Field is the JSON path of the offending input field, for 400s.
	Field string `json:"field,omitempty"`
	// Dependency is the downstream service that failed, for 502/503/504s.
	Dependency string `json:"dependency,omitempty"`
	// Status is the HTTP status; not serialized.
	Status int `json:"-"`
}

func (e *Error) Error() string { return e.Message }

// WriteJSON writes v as JSON with status code.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError writes e with status code.
func WriteError(w http.ResponseWriter, code int, e Error) { WriteJSON(w, code, e) }

// DecodeJSON reads exactly one JSON object from r's body into v. Unknown fields, wrong types,
// malformed JSON and trailing data are *Error with status 400 and, where known, the field; a body over
// the LimitBody cap is 413.
func DecodeJSON(r *http.Request, v any) *Error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return &Error{Status: http.StatusUnsupportedMediaType, Message: fmt.Sprintf("content type %q: want application/json", ct)}
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return decodeError(err)
		}
		return &Error{Status: http.StatusBadRequest, Message: "body must contain a single JSON object"}
	}
	return nil
}

func decodeError(err error) *Error {
	var (
		tooBig   *http.MaxBytesError
		syntax   *json.SyntaxError
		typeErr  *json.UnmarshalTypeError
		fieldErr *FieldError
	)
	switch {
	case errors.As(err, &tooBig):
		return &Error{Status: http.StatusRequestEntityTooLarge, Message: fmt.Sprintf("body larger than %d bytes", tooBig.Limit)}
	case errors.As(err, &syntax):
		return &Error{Status: http.StatusBadRequest, Message: fmt.Sprintf("malformed JSON at byte %d: %v", syntax.Offset, err)}
	case errors.Is(err, io.EOF):
		return &Error{Status: http.StatusBadRequest, Message: "body is empty: want a JSON object"}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &Error{Status: http.StatusBadRequest, Message: "malformed JSON: unexpected end of body"}
	case errors.As(err, &typeErr):
		return &Error{Status: http.StatusBadRequest, Field: typeErr.Field,
			Message: fmt.Sprintf("field %s: want %s, got JSON %s", typeErr.Field, typeErr.Type, typeErr.Value)}
	case errors.As(err, &fieldErr):
		return &Error{Status: http.StatusBadRequest, Field: fieldErr.Field, Message: fieldErr.Error()}
	}
	// encoding/json reports unknown fields only as text: json: unknown field "x".
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		name = strings.Trim(name, `"`)
		return &Error{Status: http.StatusBadRequest, Field: name, Message: fmt.Sprintf("unknown field %q", name)}
	}
	return &Error{Status: http.StatusBadRequest, Message: err.Error()}
}

// FieldError is a validation error of one input field; handlers return it from their validation so
// it reaches the client as a 400 naming the field.
type FieldError struct {
	// Field is the JSON path, e.g. items[0].quantity.
	Field string
	// Problem says what is wrong with it.
	Problem string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }
