-- LuaRocks: `luarocks make` (e.g. Debian's luarocks, with --lua-version 5.4
-- where 5.4 is not its default) builds with the Makefile and installs the
-- module (firefly, firefly.core) and the `firefly` interpreter into the
-- rocks tree. The C build needs the Debian packages `make deps` installs
-- (OpenBLAS, zlib, protobuf-c, libonnx-dev's onnx.proto); lua-cjson is
-- Debian's lua-cjson, which LuaRocks cannot see, so it is not listed below
-- (elsewhere: luarocks install lua-cjson).
rockspec_format = "3.0"
package = "firefly"
version = "0.1.0-1"
source = {
   url = "git+file://.",
}
description = {
   summary = "Tensors with autograd in C, a Lua 5.4 module, and Firefly network growth",
   detailed = [[
Firefly is a C tensor engine with reverse-mode autograd over OpenBLAS,
exposed as a Lua 5.4 module, with nn modules, optimisers and Firefly
neural architecture descent (growing networks by splitting neurons,
adding neurons and inserting layers), and the `firefly` interpreter.]],
}
dependencies = {
   "lua >= 5.4, < 5.5",
}
build = {
   type = "make",
   build_target = "all",
   build_variables = {
      CFLAGS = "$(CFLAGS)",
      LUA_INC = "$(LUA_INCDIR)",
   },
   install_target = "install-lua",
   install_variables = {
      PREFIX = "$(PREFIX)",
      BINDIR = "$(BINDIR)",
      LUADIR = "$(LUADIR)",
      CMODDIR = "$(LIBDIR)",
   },
}
