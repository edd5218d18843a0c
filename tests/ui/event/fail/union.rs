use annals::Event;

#[derive(Event)]
union Bits {
    int: u32,
    float: f32,
}

fn main() {}
