// Command gittestserver serves the bare Git repositories under -root over HTTP (loopback, random
// port) with github.com/fluxcd/pkg/gittestserver, optionally seeding one from a fixture directory.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/fluxcd/pkg/gittestserver"
)

func main() {
	root := flag.String("root", "", "directory holding bare repositories (default: new temp dir)")
	fixture := flag.String("fixture", "", "directory whose files become the first commit of -repo")
	repo := flag.String("repo", "repo.git", "repository path (under -root) to seed from -fixture")
	branch := flag.String("branch", "main", "branch to create when seeding")
	addrFile := flag.String("addr-file", "", "write the server's base URL to this file")
	flag.Parse()

	var srv *gittestserver.GitServer
	if *root == "" {
		s, err := gittestserver.NewTempGitServer()
		if err != nil {
			log.Fatal(err)
		}
		srv = s
	} else {
		if err := os.MkdirAll(*root, 0o755); err != nil {
			log.Fatal(err)
		}
		srv = gittestserver.NewGitServer(*root)
	}
	srv.AutoCreate()
	if *fixture != "" {
		if err := srv.InitRepo(*fixture, *branch, *repo); err != nil {
			log.Fatalf("seeding %s from %s: %v", *repo, *fixture, err)
		}
	}
	if err := srv.StartHTTP(); err != nil {
		log.Fatal(err)
	}
	defer srv.StopHTTP()
	if *addrFile != "" {
		if err := os.WriteFile(*addrFile, []byte(srv.HTTPAddress()+"\n"), 0o644); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Printf("serving %s at %s\n", srv.Root(), srv.HTTPAddress())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
}
