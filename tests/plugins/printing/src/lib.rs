//! A strategy debugged the ordinary way: `println!` and `eprintln!`. Its output goes
//! to the gateway's log, tagged with the plugin; it routes like `usable()`.

use berry_plugin_sdk::strategy::{Context, Strategy};

struct Printing;

impl Strategy for Printing {
    fn new(config: &str) -> Result<Self, String> {
        println!("printing: configured with {config}");
        Ok(Printing)
    }

    const OBSERVES: bool = false;

    fn select(&self, ctx: &Context) -> Vec<u32> {
        let order = ctx.usable();
        println!("printing: route {} sequence {} → {order:?}", ctx.request.route, ctx.request.sequence);
        if ctx.user_tags().iter().any(|t| t == "admin") {
            eprintln!("printing: an admin asked");
        }
        order
    }
}

berry_plugin_sdk::export_strategy!(Printing);
