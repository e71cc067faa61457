"""The department over a year: replay arrivals through the booking services and measure them."""
