use annals::Event;

struct Money(u64);

#[derive(Event)]
enum AccountEvent {
    Deposited { amount: Money },
}

fn main() {}
