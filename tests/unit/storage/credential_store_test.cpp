// PLACEHOLDER: to be written (owner assigned in the skeleton commit).
