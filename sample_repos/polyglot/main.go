// Package main is a small Go server.
package main

import (
	"fmt"
	str "strings"
)

import "os"

type Server struct {
	Name string
}

type Handler interface {
	Serve() error
}

func NewServer(name string) *Server {
	return &Server{Name: name}
}

func (s *Server) Start() error {
	fmt.Println(str.ToUpper(s.Name))
	return nil
}

func (s Server) Stop() {
	os.Exit(0)
}
