{
  "targets": [
    {
      "target_name": "sigil_native",
      "sources": [
        "native/addon.cc",
        "native/addon_state.cc",
        "native/args.cc",
        "native/bpf_object.cc",
        "native/errors.cc",
        "native/file_cache.cc",
        "native/libbpf_log.cc",
        "native/link.cc",
        "native/map_ops.cc",
        "native/probe.cc",
        "native/ring_buffer_consumer.cc",
        "native/ring_buffer_fill.cc",
        "native/system.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_CPP_EXCEPTIONS",
        "NODE_ADDON_API_DISABLE_DEPRECATED",
        "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"
      ],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags": ["<!@(pkg-config --cflags libbpf)", "-Wall", "-Wextra"],
      "cflags_cc": ["-std=c++17", "-fexceptions"],
      "libraries": ["<!@(pkg-config --libs libbpf)", "-lelf", "-lz"]
    }
  ]
}
