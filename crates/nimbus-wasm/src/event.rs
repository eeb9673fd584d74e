//! Host bindings of Nimbus's event world (`wit/nimbus-function`).

wasmtime::component::bindgen!({
    path: "../../wit/nimbus-function",
    world: "event-handler",
    exports: { default: async },
});

pub(crate) use exports::nimbus::function::handler::Context;
