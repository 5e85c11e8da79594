"""The experiment harness: plan runs from configs, execute them with honest timing,
store tidy records resumably, score and summarise them."""
