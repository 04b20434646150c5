package deploy

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// dockerInstruction is one instruction of a Dockerfile with its line
// continuations joined.
type dockerInstruction struct {
	Line    int // first line, counting from 1
	Keyword string
	Args    string
}

// parseDockerfile returns the instructions of a Dockerfile. It handles only
// what our Dockerfiles use: comments, blank lines and backslash line
// continuations, without heredocs or a custom escape character.
func parseDockerfile(content string) []dockerInstruction {
	var instructions []dockerInstruction
	var current strings.Builder
	start := 0
	for i, line := range strings.Split(content, "\n") {
		trimmed := strings.TrimSpace(line)
		if current.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if current.Len() == 0 {
			start = i + 1
		}

		if strings.HasSuffix(trimmed, "\\") {
			current.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		current.WriteString(trimmed)

		keyword, args, _ := strings.Cut(current.String(), " ")
		instructions = append(instructions, dockerInstruction{
			Line:    start,
			Keyword: strings.ToUpper(keyword),
			Args:    strings.TrimSpace(args),
		})
		current.Reset()
	}
	return instructions
}

// splitShellWords splits a command line into words the way sh does for
// plain words with single and double quotes. It rejects the shell syntax
// that a go build line has no use for, such as variables and pipes.
func splitShellWords(line string) ([]string, error) {
	var words []string
	var word strings.Builder
	inWord := false
	var quote rune
	for _, r := range line {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				word.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote = r
			inWord = true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, word.String())
				word.Reset()
				inWord = false
			}
		case strings.ContainsRune("$`|&;<>()\\", r):
			return nil, fmt.Errorf("unsupported shell character %q in %q", r, line)
		default:
			word.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated quote in %q", line)
	}
	if inWord {
		words = append(words, word.String())
	}
	return words, nil
}

// dockerBuildCommand is the go build command of a Dockerfile's build stage.
type dockerBuildCommand struct {
	Workdir string   // WORKDIR in effect for the RUN instruction
	Env     []string // NAME=value words before the command
	Args    []string // the command, starting with "go" "build"
	Output  string   // value of -o
}

// findGoBuild returns the one RUN instruction that runs go build, split
// into its environment, words and output path.
func findGoBuild(instructions []dockerInstruction) (dockerBuildCommand, error) {
	var found []dockerBuildCommand
	workdir := "/"
	for _, in := range instructions {
		switch in.Keyword {
		case "FROM":
			workdir = "/"
		case "WORKDIR":
			if path.IsAbs(in.Args) {
				workdir = path.Clean(in.Args)
			} else {
				workdir = path.Join(workdir, in.Args)
			}
		case "RUN":
			words, err := splitShellWords(in.Args)
			if err != nil {
				return dockerBuildCommand{}, fmt.Errorf("line %d: %w", in.Line, err)
			}

			cmd := dockerBuildCommand{Workdir: workdir}
			for len(words) > 0 && strings.Contains(words[0], "=") {
				cmd.Env = append(cmd.Env, words[0])
				words = words[1:]
			}
			if len(words) < 2 || words[0] != "go" || words[1] != "build" {
				continue
			}
			cmd.Args = words

			i := slices.Index(words, "-o")
			if i < 0 || i+1 >= len(words) {
				return dockerBuildCommand{}, fmt.Errorf("line %d: go build has no -o output path", in.Line)
			}
			cmd.Output = words[i+1]
			found = append(found, cmd)
		}
	}
	if len(found) != 1 {
		return dockerBuildCommand{}, fmt.Errorf("found %d RUN instructions with go build, want 1", len(found))
	}
	return found[0], nil
}

var serviceImages = []struct {
	service string
	ports   []string
}{
	{"auth-service", []string{"50051", "8081"}},
	{"todo-service", []string{"50052", "8082"}},
}

func TestDockerfilesFollowRules(t *testing.T) {
	for _, image := range serviceImages {
		t.Run(image.service, func(t *testing.T) {
			content, err := os.ReadFile(filepath.Join("..", image.service, "Dockerfile"))
			if err != nil {
				t.Fatal(err)
			}
			instructions := parseDockerfile(string(content))

			var froms []string
			var user, entrypoint, expose string
			for _, in := range instructions {
				switch in.Keyword {
				case "FROM":
					froms = append(froms, in.Args)
				case "USER":
					user = in.Args
				case "ENTRYPOINT":
					entrypoint = in.Args
				case "EXPOSE":
					expose = in.Args
				}
			}
			if len(froms) < 2 {
				t.Fatalf("%d FROM instructions, want a multi-stage build", len(froms))
			}
			for _, from := range froms {
				imageRef, _, _ := strings.Cut(from, " ")
				if err := checkImageReference(imageRef); err != nil {
					t.Errorf("FROM %s: %v", from, err)
				}
			}
			if final := froms[len(froms)-1]; !strings.HasPrefix(final, "gcr.io/distroless/static-debian12:") {
				t.Errorf("final stage FROM %s, want gcr.io/distroless/static-debian12 with a tag", final)
			}
			if user != "65532:65532" {
				t.Errorf("USER %q, want the numeric non-root user 65532:65532", user)
			}
			if want := strings.Join(image.ports, " "); expose != want {
				t.Errorf("EXPOSE %s, want %s", expose, want)
			}
			if want := fmt.Sprintf(`["/usr/local/bin/%s"]`, image.service); entrypoint != want {
				t.Errorf("ENTRYPOINT %s, want %s", entrypoint, want)
			}

			build, err := findGoBuild(instructions)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"CGO_ENABLED=0", "GOWORK=off"} {
				if !slices.Contains(build.Env, want) {
					t.Errorf("go build environment %q, want %s", build.Env, want)
				}
			}
			if want := "/src/" + image.service; build.Workdir != want {
				t.Errorf("go build runs in %s, want the module folder %s", build.Workdir, want)
			}
		})
	}
}

// TestDockerfileBuildCommands runs each Dockerfile's go build line as
// written, in the service's module folder, with only the output path
// moved to a temporary folder. It cannot check the COPY lines, because no
// Docker engine runs here.
func TestDockerfileBuildCommands(t *testing.T) {
	goPath, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go not found in PATH: %v", err)
	}

	for _, image := range serviceImages {
		t.Run(image.service, func(t *testing.T) {
			moduleDir := filepath.Join("..", image.service)
			if _, err := os.Stat(filepath.Join(moduleDir, "cmd", image.service)); errors.Is(err, os.ErrNotExist) {
				if inCI() {
					t.Fatalf("%s/cmd/%s does not exist, so the image cannot be built", image.service, image.service)
				}
				t.Skipf("%s/cmd/%s does not exist yet; the image build is untested", image.service, image.service)
			}

			content, err := os.ReadFile(filepath.Join(moduleDir, "Dockerfile"))
			if err != nil {
				t.Fatal(err)
			}
			build, err := findGoBuild(parseDockerfile(string(content)))
			if err != nil {
				t.Fatal(err)
			}

			output := filepath.Join(t.TempDir(), image.service)
			args := slices.Clone(build.Args[1:])
			args[slices.Index(args, "-o")+1] = output

			cmd := exec.Command(goPath, args...)
			cmd.Dir = moduleDir
			cmd.Env = append(os.Environ(), build.Env...)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s in %s: %v\n%s", strings.Join(append(build.Env, build.Args...), " "), image.service, err, out)
			}

			binary, err := elf.Open(output)
			if err != nil {
				t.Fatalf("open built binary: %v", err)
			}
			defer binary.Close()
			for _, prog := range binary.Progs {
				if prog.Type == elf.PT_INTERP {
					t.Errorf("%s has a dynamic loader (PT_INTERP), want a static binary for distroless/static", image.service)
				}
			}
		})
	}
}

func TestSplitShellWords(t *testing.T) {
	tests := []struct {
		line    string
		want    []string
		wantErr bool
	}{
		{line: `GOWORK=off go build -ldflags="-s -w" -o /out/x ./cmd/x`, want: []string{"GOWORK=off", "go", "build", "-ldflags=-s -w", "-o", "/out/x", "./cmd/x"}},
		{line: `go  build  'a b'`, want: []string{"go", "build", "a b"}},
		{line: `go build -o $OUT .`, wantErr: true},
		{line: `go build && rm -rf /`, wantErr: true},
		{line: `go build "unterminated`, wantErr: true},
	}
	for _, tc := range tests {
		got, err := splitShellWords(tc.line)
		if tc.wantErr {
			if err == nil {
				t.Errorf("splitShellWords(%q) = %q, want an error", tc.line, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("splitShellWords(%q) error: %v", tc.line, err)
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("splitShellWords(%q) = %q, want %q", tc.line, got, tc.want)
		}
	}
}
