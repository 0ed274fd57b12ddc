// Package docs is the docs check: it keeps the README and the pages under docs/ true. Links resolve, every
// page is reachable from the README, the architecture diagram names what exists, and every command shown
// in a shell block is accounted for: run by this check, run by a named test, or not runnable here for a
// stated reason.
package docs

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"unicode"
)

// Page is one Markdown file of the repository.
type Page struct {
	// Path is relative to the repository root, slash-separated.
	Path string
	Text string
}

// Pages reads every Markdown file under root except build and tool output.
func Pages(root string) ([]Page, error) {
	var pages []Page
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", ".local", "out", "node_modules", "testdata":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".md") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		pages = append(pages, Page{Path: filepath.ToSlash(rel), Text: string(b)})
		return nil
	})
	return pages, err
}

// Block is a fenced code block.
type Block struct {
	// Info is the fence's info string, such as "sh".
	Info string
	// Section is the anchor of the second-level heading the block is under ("" before the first).
	Section string
	// Line is the 1-based line of the block's first line of content.
	Line  int
	Lines []string
}

var fence = regexp.MustCompile("^(\\s*)```(\\S*)\\s*$")

// Blocks returns the fenced code blocks of a page, with the fence's indentation removed from their lines.
func (p Page) Blocks() []Block {
	var blocks []Block
	var cur *Block
	indent, section := "", ""
	sc := bufio.NewScanner(strings.NewReader(p.Text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if m := fence.FindStringSubmatch(line); m != nil {
			if cur == nil {
				cur, indent = &Block{Info: m[2], Section: section, Line: n + 1}, m[1]
			} else {
				blocks = append(blocks, *cur)
				cur = nil
			}
			continue
		}
		if cur != nil {
			cur.Lines = append(cur.Lines, strings.TrimPrefix(line, indent))
		} else if h, ok := strings.CutPrefix(line, "## "); ok {
			section = slug(strings.TrimSpace(h))
		}
	}
	return blocks
}

// Command is one command a page shows, with the output it shows after it, if any.
type Command struct {
	Page string
	// Section is the anchor of the second-level heading the command is under ("" before the first).
	Section string
	Line    int
	Text    string
	// Output is what a console block shows after the command, without its prompt.
	Output []string
}

// Commands returns every command in the page's shell blocks (sh, bash, shell: each logical line, joined
// over trailing backslashes, without a trailing "  # comment") and console blocks (lines after "$ ").
func (p Page) Commands() []Command {
	var cmds []Command
	for _, b := range p.Blocks() {
		switch b.Info {
		case "sh", "bash", "shell":
			var joined strings.Builder
			start := 0
			for i, line := range b.Lines {
				if joined.Len() == 0 {
					start = i
				}
				if cont, ok := strings.CutSuffix(strings.TrimRight(line, " "), "\\"); ok {
					joined.WriteString(strings.TrimSpace(cont) + " ")
					continue
				}
				joined.WriteString(strings.TrimSpace(line))
				text := stripComment(joined.String())
				joined.Reset()
				if text != "" {
					cmds = append(cmds, Command{Page: p.Path, Section: b.Section, Line: b.Line + start, Text: text})
				}
			}
		case "console", "":
			for i, line := range b.Lines {
				if text, ok := strings.CutPrefix(line, "$ "); ok {
					cmds = append(cmds, Command{Page: p.Path, Section: b.Section, Line: b.Line + i, Text: strings.TrimSpace(text)})
					continue
				}
				if len(cmds) > 0 && cmds[len(cmds)-1].Page == p.Path && cmds[len(cmds)-1].Line >= b.Line {
					cmds[len(cmds)-1].Output = append(cmds[len(cmds)-1].Output, line)
				}
			}
		}
	}
	return cmds
}

// stripComment removes a trailing comment written after two spaces, the style of these pages; a # inside
// a command (a sed expression, a URL fragment) is not preceded by two spaces.
func stripComment(s string) string {
	if i := strings.Index(s, "  # "); i >= 0 {
		s = s[:i]
	}
	if strings.HasPrefix(s, "# ") {
		return ""
	}
	return strings.TrimSpace(s)
}

// Link is a relative link of a page.
type Link struct {
	Page   string
	Target string // the path, relative to the page's directory; "" for a link within the page
	Anchor string // without '#'
}

var (
	linkRE       = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	inlineCodeRE = regexp.MustCompile("`[^`]*`")
)

// Links returns the page's links to files of the repository (not to URLs), outside code blocks.
func (p Page) Links() []Link {
	var links []Link
	inCode := false
	for _, line := range strings.Split(p.Text, "\n") {
		if fence.MatchString(line) {
			inCode = !inCode
			continue
		}
		if inCode {
			continue
		}
		for _, m := range linkRE.FindAllStringSubmatch(inlineCodeRE.ReplaceAllString(line, ""), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			path, anchor, _ := strings.Cut(target, "#")
			links = append(links, Link{Page: p.Path, Target: path, Anchor: anchor})
		}
	}
	return links
}

// Anchors returns the anchors GitHub gives the page's headings.
func (p Page) Anchors() map[string]bool {
	anchors := map[string]bool{}
	inCode := false
	for _, line := range strings.Split(p.Text, "\n") {
		if fence.MatchString(line) {
			inCode = !inCode
			continue
		}
		if inCode || !strings.HasPrefix(line, "#") {
			continue
		}
		heading := strings.TrimSpace(strings.TrimLeft(line, "#"))
		base := slug(heading)
		a := base
		for i := 1; anchors[a]; i++ {
			a = base + "-" + string(rune('0'+i))
		}
		anchors[a] = true
	}
	return anchors
}

// slug is GitHub's heading anchor: lower case, letters, digits, '-' and '_' kept, spaces become '-',
// everything else dropped.
func slug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}
