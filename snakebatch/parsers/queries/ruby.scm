; Ruby: definitions and requires (captures: see snakebatch/parsers/treesitter.py).
; Every `def` is a method in Ruby (a top-level one is a private method of Object).

(method name: (_) @name parameters: (method_parameters)? @params) @definition.method
(singleton_method name: (_) @name parameters: (method_parameters)? @params) @definition.method
(class name: [(constant) (scope_resolution)] @name) @definition.class
(module name: [(constant) (scope_resolution)] @name) @definition.module

; require 'json', require_relative 'lib/store', load 'x.rb'
(call
  method: (identifier) @_require (#any-of? @_require "require" "require_relative" "load")
  arguments: (argument_list . (string (string_content) @import.module) .)) @import
