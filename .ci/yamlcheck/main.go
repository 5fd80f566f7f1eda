// yamlcheck: parse checks for .ci/lint that need no cluster.
//
//	yamlcheck kind-config FILE   decode FILE strictly into kind's v1alpha4 Cluster (as kind does:
//	                             unknown or mistyped fields fail), and require kind and apiVersion
//	yamlcheck yaml FILE...       parse every document of every FILE as YAML
package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	yamlv3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	"sigs.k8s.io/yaml"
)

func kindConfig(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var c v1alpha4.Cluster
	if err := yaml.UnmarshalStrict(raw, &c); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if c.Kind != "Cluster" || c.APIVersion != "kind.x-k8s.io/v1alpha4" {
		return fmt.Errorf("%s: want kind Cluster, apiVersion kind.x-k8s.io/v1alpha4; got %q, %q", path, c.Kind, c.APIVersion)
	}
	if len(c.Nodes) == 0 {
		return fmt.Errorf("%s: no nodes", path)
	}
	return nil
}

func yamlDocs(path string) (int, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	dec := yamlv3.NewDecoder(bytes.NewReader(raw))
	n := 0
	for {
		var doc yamlv3.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("%s: document %d: %w", path, n+1, err)
		}
		n++
	}
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: yamlcheck kind-config FILE | yamlcheck yaml FILE...")
		os.Exit(2)
	}
	failed := false
	switch os.Args[1] {
	case "kind-config":
		if err := kindConfig(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			failed = true
		}
	case "yaml":
		for _, p := range os.Args[2:] {
			if _, err := yamlDocs(p); err != nil {
				fmt.Fprintln(os.Stderr, err)
				failed = true
			}
		}
	default:
		fmt.Fprintf(os.Stderr, "unknown mode %q\n", os.Args[1])
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}
