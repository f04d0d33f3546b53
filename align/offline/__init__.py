"""Offline alignment on exported data: `align sft` and `align dpo` (TRL's trainers, our preference losses),
and the loader of preference pairs and SFT rows from an export file or the store."""
