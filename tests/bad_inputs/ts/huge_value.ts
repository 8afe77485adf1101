@problemName bad
@univariate false
@dimensions 2
@equalLength false
@classLabel true a b
@data
1.0,2.0,3.0:0.5,0.6,0.7:a
1.5,2.5:0.1,1e39:b
