@problemName bad
@univariate false
@dimensions 2
@equalLength false
@classLabel true a b
